//! The commit of one partition on an object store, for plain Parquet.
//!
//! An object store has no rename, and a partition's files cannot be replaced together. Writing
//! new files over the old names would let a reader, or a crash, combine files of two runs. So
//! the Parquet files of a partition are never overwritten:
//!
//! 1. each staged Parquet file is uploaded under a name unique to the commit:
//!    `part-0.parquet` becomes `part-0.<commit>.parquet`, where `<commit>` is `sp` and digits
//!    ([`commit_id`]);
//! 2. the writer's **commit marker** `_committed-<writer>.json` is put, in one PUT. It lists the
//!    files the writer has in the partition. From here on, the new files are the writer's. The
//!    writer is `all` for a run that replaces the whole partition, or one shard of several that
//!    publish side by side (each has its own marker, so shards commit without a race);
//! 3. what the commit replaced is removed: the markers that the commit makes stale (first, so
//!    that no marker ever names a removed file), then the files that no remaining marker names.
//!
//! Our readers ([`visible`]) read a directory that holds markers through them: only the files
//! the markers name. They never see a mix, and never the files of a run that died before its
//! marker. A directory without markers (files from another writer) is read as it is, except for
//! files named like an uncommitted upload of ours.
//!
//! A plain Parquet reader (DuckDB, pandas, Spark) lists every `.parquet` file. It sees the old
//! and the new files together between steps 1 and 3, and the uploads of a run that died before
//! step 3 until the partition's next publish removes them. docs/architecture.md says so and
//! recommends reading an object-store root through the markers or as Delta tables.
//!
//! Other files (a rejects file) are put under their own names: one PUT replaces one object
//! atomically, and readers find it at the path the run's messages give.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};
use crate::output::StaleFiles;

/// Commit markers are named `_committed-<writer>.json`: readers of plain Parquet skip files whose
/// name starts with `_` (Spark, pyarrow) or that do not end in `.parquet` (DuckDB's globs).
pub const MARKER_PREFIX: &str = "_committed-";
const MARKER_SUFFIX: &str = ".json";

/// The writer of a whole partition.
const WHOLE: &str = "all";

/// A writer's commit marker: the files it has in the partition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Marker {
    commit: String,
    writer: String,
    /// The files as the run wrote them (`name`) and as they are stored (`object`), sorted by name.
    files: Vec<MarkedFile>,
    /// The markers (by name and commit) this commit replaces: from the moment this marker is
    /// there, readers ignore them, though they are deleted only after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    replaces_markers: Vec<MarkerRef>,
    /// The files under their own names (another writer's, an older release's) that this commit
    /// replaces: hidden from readers from this marker on, deleted after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    replaces_files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
struct MarkerRef {
    marker: String,
    commit: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct MarkedFile {
    name: String,
    object: String,
}

/// Who publishes a partition's files, and what of the existing files it replaces.
pub(crate) enum Writer<'a> {
    /// A run that replaces the partition whole.
    Whole,
    /// One writer of several that publish side by side: `id` names its marker; the existing
    /// files (by the name a run gave them) for which `stale` is true go.
    Beside { id: &'a str, stale: &'a StaleFiles },
}

impl Writer<'_> {
    fn id(&self) -> &str {
        match self {
            Writer::Whole => WHOLE,
            Writer::Beside { id, .. } => id,
        }
    }

    /// Whether an existing file or marker, by the name a run gave it, is replaced by this commit.
    fn replaces(&self, name: &str) -> bool {
        match self {
            Writer::Whole => true,
            Writer::Beside { stale, .. } => stale(name),
        }
    }
}

/// Numbers this process's commits.
static COMMITS: AtomicUsize = AtomicUsize::new(0);

/// A name unique to one commit: `sp`, then the time (to the millisecond), the process id, the
/// process's commit count and six random digits, all digits. The random part keeps two writers
/// apart whose pids agree (containers all run as pid 1).
pub(crate) fn commit_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!(
        "sp{}{:07}{:03}{:06}",
        chrono::Utc::now().format("%Y%m%d%H%M%S%3f"),
        std::process::id() % 10_000_000,
        COMMITS.fetch_add(1, Ordering::SeqCst) % 1000,
        random % 1_000_000
    )
}

fn is_commit_id(s: &str) -> bool {
    s.len() > 2 && s.starts_with("sp") && s[2..].bytes().all(|b| b.is_ascii_digit())
}

/// `part-0.parquet` stored by commit `c`: `part-0.<c>.parquet`.
pub(crate) fn stored_name(name: &str, commit: &str) -> String {
    match name.split_once('.') {
        Some((stem, ext)) => format!("{stem}.{commit}.{ext}"),
        None => format!("{name}.{commit}"),
    }
}

/// The name a run gave a stored file, and whether it was stored under a commit's name.
pub(crate) fn run_name(stored: &str) -> (String, bool) {
    let parts: Vec<&str> = stored.split('.').collect();
    match parts.iter().position(|p| is_commit_id(p)) {
        Some(i) if i > 0 => {
            let mut rest = parts.clone();
            rest.remove(i);
            (rest.join("."), true)
        }
        _ => (stored.to_string(), false),
    }
}

fn marker_name(writer: &str) -> String {
    format!("{MARKER_PREFIX}{writer}{MARKER_SUFFIX}")
}

fn is_marker(name: &str) -> bool {
    name.starts_with(MARKER_PREFIX) && name.ends_with(MARKER_SUFFIX)
}

/// A writer id as it may stand in a file name.
fn writer_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_matches('-')
        .to_string()
}

/// The markers among `objects` (one directory's), read; a marker removed since the listing was
/// dropped by a commit and is skipped.
async fn read_markers(
    store: &dyn ObjectStore,
    objects: &[ObjectMeta],
) -> Result<BTreeMap<String, Marker>> {
    let mut markers = BTreeMap::new();
    for meta in objects {
        let Some(name) = meta.location.filename() else {
            continue;
        };
        if !is_marker(name) {
            continue;
        }
        let bytes = match store.get(&meta.location).await {
            Ok(got) => got.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let marker: Marker = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Internal(format!(
                "commit marker {} is not readable: {e}",
                meta.location
            ))
        })?;
        markers.insert(name.to_string(), marker);
    }
    Ok(markers)
}

/// The names of the markers that a marker present replaces (by name and commit: a writer's
/// newer marker under the same name is not replaced by what replaced its older one).
fn dead_markers(markers: &BTreeMap<String, Marker>) -> BTreeSet<&str> {
    let replaced: BTreeSet<(&str, &str)> = markers
        .values()
        .flat_map(|m| {
            m.replaces_markers
                .iter()
                .map(|r| (r.marker.as_str(), r.commit.as_str()))
        })
        .collect();
    markers
        .iter()
        .filter(|(name, m)| replaced.contains(&(name.as_str(), m.commit.as_str())))
        .map(|(name, _)| name.as_str())
        .collect()
}

/// Publishes the files of the local directory `staged` into the partition `base` of `store`, as
/// `writer`; returns the stored names of the published files, sorted by the names the run gave
/// them. See the module's documentation for the steps.
pub(crate) async fn publish(
    store: &dyn ObjectStore,
    base: &ObjectPath,
    staged: &Path,
    writer: Writer<'_>,
) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(staged).map_err(|e| Error::io(staged, e))? {
        let entry = entry.map_err(|e| Error::io(staged, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    let commit = commit_id();
    let mine = marker_name(&writer_id(writer.id()));

    // What the partition holds before this commit.
    let before = store.list_with_delimiter(Some(base)).await?.objects;
    let markers = read_markers(store, &before).await?;

    // What the commit replaces: the other writers' markers it makes stale, and every file that
    // no remaining marker names and that the commit replaces.
    // (A marker already replaced by a marker present is dead, and goes too: were the marker
    // that replaced it dropped, it would come back.)
    let dead = dead_markers(&markers);
    let dropped: BTreeMap<&String, &Marker> = markers
        .iter()
        .filter(|(name, marker)| {
            **name != mine
                && (dead.contains(name.as_str())
                    || matches!(writer, Writer::Whole)
                    || marker.files.iter().any(|f| writer.replaces(&f.name)))
        })
        .collect();
    let mut kept: BTreeSet<String> = BTreeSet::new();
    for (name, marker) in &markers {
        if *name != mine && !dropped.contains_key(name) {
            kept.extend(marker.files.iter().map(|f| f.object.clone()));
        }
    }
    let mine_before: BTreeSet<&str> = markers
        .get(&mine)
        .map(|m| m.files.iter().map(|f| f.object.as_str()).collect())
        .unwrap_or_default();
    // The files of a dropped marker go with it (a dead marker's, say, another shard's).
    let of_dropped: BTreeSet<&str> = dropped
        .values()
        .flat_map(|m| m.files.iter().map(|f| f.object.as_str()))
        .collect();
    let parquet: Vec<&String> = names.iter().filter(|n| n.ends_with(".parquet")).collect();
    let others: Vec<&String> = names.iter().filter(|n| !n.ends_with(".parquet")).collect();
    let mut deleted = Vec::new();
    for meta in &before {
        let Some(object) = meta.location.filename() else {
            continue;
        };
        let (name, _) = run_name(object);
        if is_marker(object) || kept.contains(object) || others.contains(&&name) {
            continue; // a file put under its own name is replaced by its PUT
        }
        if mine_before.contains(object) || of_dropped.contains(object) || writer.replaces(&name) {
            deleted.push(object.to_string());
        }
    }

    // 1. The Parquet uploads, under the commit's names.
    let mut marked = Vec::new();
    for name in &parquet {
        let object = stored_name(name, &commit);
        upload_file(
            store,
            &staged.join(name.as_str()),
            &base.clone().join(object.as_str()),
        )
        .await?;
        marked.push(MarkedFile {
            name: name.to_string(),
            object,
        });
    }

    // 2. The marker: for a writer with Parquet files, one replacing its own earlier marker, or
    // one that replaces what others wrote.
    let replaces_files: Vec<String> = deleted.iter().filter(|o| !run_name(o).1).cloned().collect();
    let marks = !marked.is_empty()
        || markers.contains_key(&mine)
        || matches!(writer, Writer::Whole)
        || !dropped.is_empty()
        || !replaces_files.is_empty();
    let mut published: Vec<String> = marked.iter().map(|f| f.object.clone()).collect();
    if marks {
        let marker = Marker {
            commit: commit.clone(),
            writer: writer_id(writer.id()),
            files: marked,
            replaces_markers: dropped
                .iter()
                .map(|(name, m)| MarkerRef {
                    marker: name.to_string(),
                    commit: m.commit.clone(),
                })
                .collect(),
            replaces_files,
        };
        store
            .put(
                &base.clone().join(mine.as_str()),
                serde_json::to_vec_pretty(&marker)?.into(),
            )
            .await?;
    }

    // Files under their own names (a rejects file, a report): after the marker, so that a run
    // killed before its commit leaves no new file beside the old partition.
    for name in others {
        upload_file(
            store,
            &staged.join(name.as_str()),
            &base.clone().join(name.as_str()),
        )
        .await?;
        published.push(name.clone());
    }

    // 3. What the commit replaced: the stale markers first (so that no marker ever names a
    // removed file), then the files.
    for name in dropped.keys() {
        store.delete(&base.clone().join(name.as_str())).await?;
    }
    for object in &deleted {
        store.delete(&base.clone().join(object.as_str())).await?;
    }
    published.sort_by_key(|o| run_name(o).0);
    Ok(published)
}

/// Of one listing (files of one or more directories), the files our readers read. In a
/// directory with commit markers: the Parquet files that the live markers name (a marker is
/// dead once a marker present replaces it), and the files under their own names that no marker
/// replaces. Elsewhere: every file except the uploads of a commit that has no marker (a run
/// that died publishing). A file a live marker names that the listing lacks means a commit
/// came between the listing and the read: it fails (75), a retry reads the new partition.
pub async fn visible(store: &dyn ObjectStore, objects: Vec<ObjectMeta>) -> Result<Vec<ObjectMeta>> {
    let by_dir = super::by_directory(objects);
    let mut out = Vec::new();
    for (dir, files) in by_dir {
        let markers = read_markers(store, &files).await?;
        if markers.is_empty() {
            out.extend(files.into_iter().filter(|m| {
                let name = m.location.filename().unwrap_or_default();
                !run_name(name).1
            }));
            continue;
        }
        let dead = dead_markers(&markers);
        let live: Vec<&Marker> = markers
            .iter()
            .filter(|(name, _)| !dead.contains(name.as_str()))
            .map(|(_, m)| m)
            .collect();
        let named: BTreeSet<&str> = live
            .iter()
            .flat_map(|m| m.files.iter().map(|f| f.object.as_str()))
            .collect();
        let replaced: BTreeSet<&str> = live
            .iter()
            .flat_map(|m| m.replaces_files.iter().map(String::as_str))
            .collect();
        let listed: BTreeSet<&str> = files.iter().filter_map(|m| m.location.filename()).collect();
        if let Some(missing) = named.iter().find(|o| !listed.contains(*o)) {
            return Err(object_store::Error::Generic {
                store: "commit",
                source: format!(
                    "{dir}/{missing} is named by a commit marker but was not listed: the \
                     partition was published again while being read; a retry reads it whole"
                )
                .into(),
            }
            .into());
        }
        out.extend(
            files
                .iter()
                .filter(|m| {
                    let name = m.location.filename().unwrap_or_default();
                    named.contains(name)
                        || !(is_marker(name) || run_name(name).1 || replaced.contains(name))
                })
                .cloned(),
        );
    }
    Ok(out)
}

/// Uploads one local file (a multipart upload: the object appears whole or not at all).
pub(crate) async fn upload_file(
    store: &dyn ObjectStore,
    src: &Path,
    dest: &ObjectPath,
) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(src)
        .await
        .map_err(|e| Error::io(src, e))?;
    let upload = store.put_multipart(dest).await?;
    let mut writer = object_store::WriteMultipart::new(upload);
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = file.read(&mut buf).await.map_err(|e| Error::io(src, e))?;
        if n == 0 {
            break;
        }
        writer.write(&buf[..n]);
    }
    writer.finish().await?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicIsize;

    use futures::stream::BoxStream;
    use futures::{StreamExt, TryStreamExt};
    use object_store::memory::InMemory;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, PutMultipartOptions,
        PutOptions, PutPayload, PutResult,
    };

    use super::*;

    /// An object store that fails every write (upload, marker, delete) after `budget` of them:
    /// a process killed between two steps of a publish, as the store sees it.
    #[derive(Debug)]
    pub(crate) struct Failing {
        inner: InMemory,
        budget: AtomicIsize,
        /// Only writes to paths holding this fail (the others never spend the budget).
        only: Option<&'static str>,
    }

    impl Failing {
        pub(crate) fn new(inner: InMemory, budget: isize) -> Self {
            Failing {
                inner,
                budget: AtomicIsize::new(budget),
                only: None,
            }
        }
        /// A store on which every write to a path holding `part` fails, and nothing else.
        pub(crate) fn writes_to(inner: InMemory, part: &'static str) -> Self {
            Failing {
                inner,
                budget: AtomicIsize::new(0),
                only: Some(part),
            }
        }
        fn spend_on(&self, location: &ObjectPath) -> object_store::Result<()> {
            match self.only {
                Some(part) if location.as_ref().contains(part) => Err(died()),
                Some(_) => Ok(()),
                None => self.spend(),
            }
        }
        fn spend(&self) -> object_store::Result<()> {
            if self.only.is_some() {
                return Ok(());
            }
            if self.budget.fetch_sub(1, Ordering::SeqCst) <= 0 {
                return Err(died());
            }
            Ok(())
        }
    }

    fn died() -> object_store::Error {
        object_store::Error::Generic {
            store: "failing",
            source: "the process died here".into(),
        }
    }

    impl std::fmt::Display for Failing {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("failing")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Failing {
        async fn put_opts(
            &self,
            location: &ObjectPath,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.spend_on(location)?;
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &ObjectPath,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.spend_on(location)?;
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &ObjectPath,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<ObjectPath>>,
        ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
            match self.spend() {
                Ok(()) => self.inner.delete_stream(locations),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            }
        }
        fn list(
            &self,
            prefix: Option<&ObjectPath>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&ObjectPath>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &ObjectPath,
            to: &ObjectPath,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.spend_on(to)?;
            self.inner.copy_opts(from, to, options).await
        }
    }

    fn base() -> ObjectPath {
        ObjectPath::from("root/recs/date=2026-11-26")
    }

    /// A staging directory holding `files`, each file's bytes its name and `generation`.
    fn staged(files: &[&str], generation: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            std::fs::write(dir.path().join(f), format!("{generation}:{f}")).unwrap();
        }
        dir
    }

    /// What our readers read of the partition: (the name a run gave each file, its bytes).
    async fn read(store: &dyn ObjectStore) -> Vec<(String, String)> {
        let listed: Vec<ObjectMeta> = store.list(Some(&base())).try_collect().await.unwrap();
        let mut out = Vec::new();
        for meta in visible(store, listed).await.unwrap() {
            let name = meta.location.filename().unwrap();
            let bytes = store
                .get(&meta.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            out.push((run_name(name).0, String::from_utf8(bytes.to_vec()).unwrap()));
        }
        out.sort();
        out
    }

    /// Publishes `files` of one generation as `writer`; gives back their stored names.
    async fn commit(
        store: &dyn ObjectStore,
        files: &[&str],
        generation: &str,
        writer: Writer<'_>,
    ) -> Vec<String> {
        publish(store, &base(), staged(files, generation).path(), writer)
            .await
            .unwrap()
    }

    fn expect(files: &[&str], generation: &str) -> Vec<(String, String)> {
        files
            .iter()
            .map(|f| (f.to_string(), format!("{generation}:{f}")))
            .collect()
    }

    /// Every object in the partition.
    async fn objects(store: &dyn ObjectStore) -> Vec<String> {
        let listed: Vec<ObjectMeta> = store.list(Some(&base())).try_collect().await.unwrap();
        let mut names: Vec<String> = listed
            .iter()
            .map(|m| m.location.filename().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn stored_names_carry_the_commit_and_give_back_the_run_s_name() {
        let stored = stored_name("part-0.parquet", "sp2026120219100012301234567000");
        assert_eq!(stored, "part-0.sp2026120219100012301234567000.parquet");
        assert_eq!(run_name(&stored), ("part-0.parquet".into(), true));
        assert_eq!(run_name("part-0.parquet"), ("part-0.parquet".into(), false));
        assert_eq!(run_name("sp12.parquet"), ("sp12.parquet".into(), false));
        assert_eq!(run_name("a.spx.parquet"), ("a.spx.parquet".into(), false));
        assert!(is_commit_id(&commit_id()));
        assert_ne!(commit_id(), commit_id());
        assert_eq!(writer_id("shard-00001-of-00002-"), "shard-00001-of-00002");
        assert_eq!(writer_id("a/b.jsonl"), "a_b_jsonl");
    }

    #[tokio::test]
    async fn a_rerun_replaces_the_partition_and_leaves_one_marker_and_its_files() {
        let store = InMemory::new();
        commit(
            &store,
            &["part-0.parquet", "part-1.parquet"],
            "old",
            Writer::Whole,
        )
        .await;
        assert_eq!(
            read(&store).await,
            expect(&["part-0.parquet", "part-1.parquet"], "old")
        );
        let again = staged(&["part-0.parquet"], "new");
        let stored = publish(&store, &base(), again.path(), Writer::Whole)
            .await
            .unwrap();
        assert_eq!(read(&store).await, expect(&["part-0.parquet"], "new"));
        assert_eq!(
            objects(&store).await,
            vec!["_committed-all.json".to_string(), stored[0].clone()],
            "the old files are gone"
        );
    }

    #[tokio::test]
    async fn a_publish_killed_at_any_step_shows_the_old_files_or_the_new_never_a_mix() {
        let old = ["part-0.parquet", "part-1.parquet"];
        let new = ["part-0.parquet", "part-1.parquet", "part-2.parquet"];
        let mut steps = 0;
        loop {
            let inner = InMemory::new();
            commit(&inner, &old, "old", Writer::Whole).await;
            let store = Failing::new(inner, steps);
            let done = publish(&store, &base(), staged(&new, "new").path(), Writer::Whole)
                .await
                .is_ok();
            let seen = read(&store).await;
            assert!(
                seen == expect(&old, "old") || seen == expect(&new, "new"),
                "killed after {steps} writes, readers see {seen:?}"
            );
            // The next run finds a consistent partition and leaves nothing of the dead one.
            store.budget.store(isize::MAX, Ordering::SeqCst);
            let next = ["part-0.parquet"];
            commit(&store, &next, "next", Writer::Whole).await;
            assert_eq!(read(&store).await, expect(&next, "next"));
            assert_eq!(
                objects(&store).await.len(),
                2,
                "{:?}",
                objects(&store).await
            );
            if done {
                break;
            }
            steps += 1;
        }
        // Three uploads, the marker, two deletes: every point between them was tried.
        assert_eq!(steps, 6);
    }

    #[tokio::test]
    async fn shards_commit_side_by_side_and_a_whole_run_replaces_them() {
        let store = InMemory::new();
        commit(&store, &["part-0.parquet"], "whole", Writer::Whole).await;
        let layout = |prefix: &'static str| -> StaleFiles {
            Arc::new(move |n: &str| n.starts_with(prefix) || !n.contains("-of-00002-"))
        };
        let (s0, s1) = (layout("s0-of-00002-"), layout("s1-of-00002-"));
        let shard = |id, stale| Writer::Beside { id, stale };
        commit(
            &store,
            &["s0-of-00002-part-0.parquet"],
            "a",
            shard("s0", &s0),
        )
        .await;
        assert_eq!(
            read(&store).await,
            expect(&["s0-of-00002-part-0.parquet"], "a"),
            "another layout's files go"
        );
        commit(
            &store,
            &["s1-of-00002-part-0.parquet"],
            "a",
            shard("s1", &s1),
        )
        .await;
        commit(
            &store,
            &["s0-of-00002-part-0.parquet"],
            "b",
            shard("s0", &s0),
        )
        .await;
        let mut both = expect(&["s0-of-00002-part-0.parquet"], "b");
        both.extend(expect(&["s1-of-00002-part-0.parquet"], "a"));
        assert_eq!(
            read(&store).await,
            both,
            "a shard's rerun replaces its own files only"
        );
        assert_eq!(objects(&store).await.len(), 4, "two markers, two files");
        // A shard's upload that has no marker yet is left alone by the other shard's commit.
        let pending = ObjectPath::from("root/recs/date=2026-11-26/s1-of-00002-part-1.sp1.parquet");
        store.put(&pending, "pending".into()).await.unwrap();
        commit(
            &store,
            &["s0-of-00002-part-0.parquet"],
            "c",
            shard("s0", &s0),
        )
        .await;
        assert!(
            objects(&store)
                .await
                .contains(&"s1-of-00002-part-1.sp1.parquet".to_string())
        );
        commit(&store, &["part-0.parquet"], "whole2", Writer::Whole).await;
        assert_eq!(read(&store).await, expect(&["part-0.parquet"], "whole2"));
        assert_eq!(objects(&store).await.len(), 2);
    }

    #[tokio::test]
    async fn a_file_that_is_not_parquet_is_put_under_its_own_name() {
        let store = InMemory::new();
        let name: StaleFiles = Arc::new(|n: &str| n == "rejects-0.jsonl");
        let writer = || Writer::Beside {
            id: "rejects-0.jsonl",
            stale: &name,
        };
        let stored = commit(&store, &["rejects-0.jsonl"], "a", writer()).await;
        assert_eq!(stored, ["rejects-0.jsonl"]);
        commit(&store, &["rejects-0.jsonl"], "b", writer()).await;
        assert_eq!(
            objects(&store).await,
            ["rejects-0.jsonl"],
            "no marker, no copy"
        );
        assert_eq!(read(&store).await, expect(&["rejects-0.jsonl"], "b"));

        // Beside marked Parquet files, a file under its own name is read too.
        let whole = InMemory::new();
        commit(
            &whole,
            &["part-0.parquet", "report.json"],
            "a",
            Writer::Whole,
        )
        .await;
        assert_eq!(
            read(&whole).await,
            expect(&["part-0.parquet", "report.json"], "a")
        );
    }

    #[tokio::test]
    async fn a_directory_without_markers_is_read_whole_but_for_uploads_of_a_dead_commit() {
        let store = InMemory::new();
        for name in ["part-0.parquet", "part-1.sp123.parquet"] {
            let at = base().join(name);
            store.put(&at, format!("x:{name}").into()).await.unwrap();
        }
        let seen: Vec<String> = read(&store).await.into_iter().map(|(n, _)| n).collect();
        assert_eq!(seen, ["part-0.parquet"]);
    }

    /// A writer of the kill tests: the whole partition, or shard `s0`/`s1` of two.
    #[derive(Clone, Copy)]
    enum As {
        Whole,
        Shard(&'static str),
    }

    async fn commit_as(store: &dyn ObjectStore, files: &[&str], generation: &str, by: As) {
        match by {
            As::Whole => {
                commit(store, files, generation, Writer::Whole).await;
            }
            As::Shard(id) => {
                let prefix = format!("{id}-of-00002-");
                let stale: StaleFiles =
                    Arc::new(move |n: &str| n.starts_with(&prefix) || !n.contains("-of-00002-"));
                commit(
                    store,
                    files,
                    generation,
                    Writer::Beside { id, stale: &stale },
                )
                .await;
            }
        }
    }

    /// Kills `next` after each of its writes, over the partition `prior` leaves (commits, then
    /// files put under their own names by another writer): readers see the old partition or
    /// the new one, and a rerun of `next` leaves exactly what an unbroken run leaves.
    async fn killed_at_every_step(
        prior: &[(&[&str], &str, As)],
        foreign: &[&str],
        next: (&[&str], &str, As),
    ) {
        let setup = || async {
            let store = InMemory::new();
            for (files, generation, by) in prior {
                commit_as(&store, files, generation, *by).await;
            }
            for name in foreign {
                let at = base().join(*name);
                store
                    .put(&at, format!("foreign:{name}").into())
                    .await
                    .unwrap();
            }
            store
        };
        let clean = setup().await;
        let old = read(&clean).await;
        commit_as(&clean, next.0, next.1, next.2).await;
        let new = read(&clean).await;
        assert_ne!(old, new);
        let mut steps = 0;
        loop {
            let store = Failing::new(setup().await, steps);
            let by = next.2;
            let done = match by {
                As::Whole => {
                    publish(
                        &store,
                        &base(),
                        staged(next.0, next.1).path(),
                        Writer::Whole,
                    )
                    .await
                }
                As::Shard(id) => {
                    let prefix = format!("{id}-of-00002-");
                    let stale: StaleFiles = Arc::new(move |n: &str| {
                        n.starts_with(&prefix) || !n.contains("-of-00002-")
                    });
                    let writer = Writer::Beside { id, stale: &stale };
                    publish(&store, &base(), staged(next.0, next.1).path(), writer).await
                }
            }
            .is_ok();
            let seen = read(&store).await;
            assert!(
                seen == old || seen == new,
                "killed after {steps} writes, readers see {seen:?}, not {old:?} or {new:?}"
            );
            store.budget.store(isize::MAX, Ordering::SeqCst);
            commit_as(&store, next.0, next.1, next.2).await;
            assert_eq!(read(&store).await, new, "the rerun after {steps} writes");
            assert_eq!(
                objects(&store).await.len(),
                objects(&clean).await.len(),
                "nothing of the killed run is left: {:?}",
                objects(&store).await
            );
            if done {
                break;
            }
            steps += 1;
        }
    }

    #[tokio::test]
    async fn a_whole_run_over_shards_killed_at_any_step_shows_the_shards_or_the_new_run() {
        let s0: &[&str] = &["s0-of-00002-part-0.parquet"];
        let s1: &[&str] = &["s1-of-00002-part-0.parquet"];
        killed_at_every_step(
            &[(s0, "a", As::Shard("s0")), (s1, "a", As::Shard("s1"))],
            &[],
            (&["part-0.parquet"], "whole", As::Whole),
        )
        .await;
    }

    #[tokio::test]
    async fn a_shard_over_a_whole_run_or_its_own_earlier_files_killed_at_any_step_never_mixes() {
        let s0: &[&str] = &["s0-of-00002-part-0.parquet"];
        let s1: &[&str] = &["s1-of-00002-part-0.parquet"];
        killed_at_every_step(
            &[(&["part-0.parquet", "part-1.parquet"], "whole", As::Whole)],
            &[],
            (s0, "a", As::Shard("s0")),
        )
        .await;
        killed_at_every_step(
            &[(s0, "a", As::Shard("s0")), (s1, "a", As::Shard("s1"))],
            &[],
            (s0, "b", As::Shard("s0")),
        )
        .await;
    }

    #[tokio::test]
    async fn the_shards_a_whole_run_replaced_do_not_come_back_when_a_shard_replaces_it() {
        let s0: &[&str] = &["s0-of-00002-part-0.parquet"];
        let s1: &[&str] = &["s1-of-00002-part-0.parquet"];
        let inner = InMemory::new();
        commit_as(&inner, s0, "a", As::Shard("s0")).await;
        commit_as(&inner, s1, "a", As::Shard("s1")).await;
        // The whole run dies after its upload and its marker, before any delete.
        let store = Failing::new(inner, 2);
        let whole = staged(&["part-0.parquet"], "whole");
        assert!(
            publish(&store, &base(), whole.path(), Writer::Whole)
                .await
                .is_err()
        );
        assert_eq!(read(&store).await, expect(&["part-0.parquet"], "whole"));
        store.budget.store(isize::MAX, Ordering::SeqCst);
        commit_as(&store, s0, "b", As::Shard("s0")).await;
        assert_eq!(read(&store).await, expect(s0, "b"));
        assert_eq!(
            objects(&store).await.len(),
            2,
            "{:?}",
            objects(&store).await
        );
    }

    #[tokio::test]
    async fn a_commit_over_files_another_writer_put_killed_at_any_step_never_mixes() {
        killed_at_every_step(
            &[],
            &["part-0.parquet", "part-9.parquet"],
            (&["part-0.parquet"], "new", As::Whole),
        )
        .await;
        // An older release's shard files under plain names: shard 0's commit replaces its
        // own and keeps shard 1's, which stays visible.
        killed_at_every_step(
            &[],
            &["s0-of-00002-part-0.parquet", "s1-of-00002-part-0.parquet"],
            (&["s0-of-00002-part-0.parquet"], "new", As::Shard("s0")),
        )
        .await;
        let store = InMemory::new();
        for name in ["s0-of-00002-part-0.parquet", "s1-of-00002-part-0.parquet"] {
            store.put(&base().join(name), "old".into()).await.unwrap();
        }
        commit_as(
            &store,
            &["s0-of-00002-part-0.parquet"],
            "new",
            As::Shard("s0"),
        )
        .await;
        let names: Vec<String> = read(&store).await.into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["s0-of-00002-part-0.parquet", "s1-of-00002-part-0.parquet"]
        );
    }

    #[tokio::test]
    async fn a_file_another_writer_puts_into_a_committed_partition_is_read() {
        let store = InMemory::new();
        commit(&store, &["part-0.parquet"], "a", Writer::Whole).await;
        let at = base().join("part-plays-p0000-o1-o9.parquet");
        store.put(&at, "x:ingested".into()).await.unwrap();
        let names: Vec<String> = read(&store).await.into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["part-0.parquet", "part-plays-p0000-o1-o9.parquet"]);
    }

    #[tokio::test]
    async fn a_commit_between_the_listing_and_the_read_fails_the_read_for_a_retry() {
        let store = InMemory::new();
        commit(&store, &["part-0.parquet"], "a", Writer::Whole).await;
        let listed: Vec<ObjectMeta> = store.list(Some(&base())).try_collect().await.unwrap();
        commit(&store, &["part-0.parquet"], "b", Writer::Whole).await;
        let err = visible(&store, listed).await.unwrap_err();
        assert_eq!(err.exit_code(), crate::exit::ExitCode::TempFail, "{err}");
        assert!(err.to_string().contains("published again"), "{err}");
    }
}
