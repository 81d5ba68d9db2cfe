//! The other inputs of the data contract: user features and song embeddings (B), subscriptions
//! (D), experiments, assignments and user metrics (E). Each is deterministic for its seed and
//! produced in bounded chunks.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, FixedSizeListArray, Float32Array,
    Float64Array, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field};
use arrow::record_batch::RecordBatch;
use chrono::{Datelike, NaiveDate};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use streampulse_core::schema::{
    ASSIGNMENTS, EMBEDDING_DIM, EXPERIMENTS, SONG_EMBEDDINGS, SUBSCRIPTIONS, USER_FEATURES,
    USER_METRICS,
};
use streampulse_core::time::days_from_civil;

use crate::catalog::Catalog;
use crate::dims::{GENRES, MARKETS, PLANS, minor_unit_digits};

const DIM: usize = EMBEDDING_DIM as usize;

fn normal<R: Rng>(rng: &mut R) -> f32 {
    // Box-Muller; rand_distr would be one more dependency for one function.
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Genre centroids in embedding space: songs sit near their genre's centroid, users between the
/// centroids of their two favourite genres, so dot-product scores carry real structure.
fn centroids(seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ 0xCE47);
    (0..GENRES.len())
        .map(|_| {
            (0..DIM)
                .map(|_| normal(&mut rng) / (DIM as f32).sqrt())
                .collect()
        })
        .collect()
}

fn vectors_batch(
    schema: &arrow::datatypes::SchemaRef,
    ids: Vec<i64>,
    values: Vec<f32>,
) -> RecordBatch {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let list = FixedSizeListArray::new(
        item,
        EMBEDDING_DIM,
        Arc::new(Float32Array::from(values)),
        None,
    );
    RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from(ids)), Arc::new(list)],
    )
    .expect("vector columns match the schema")
}

/// `song_embeddings` for every song of the catalog, in batches of `batch_rows`.
pub fn song_embeddings(
    seed: u64,
    catalog: &Catalog,
    batch_rows: usize,
) -> impl Iterator<Item = RecordBatch> + '_ {
    let c = centroids(seed);
    catalog
        .songs
        .chunks(batch_rows.max(1))
        .enumerate()
        .map(move |(k, songs)| {
            let mut rng = Pcg64Mcg::seed_from_u64(seed ^ 0x50_96 ^ ((k as u64) << 20));
            let mut values = Vec::with_capacity(songs.len() * DIM);
            for s in songs {
                let g = &c[s.genre as usize];
                values.extend(
                    g.iter()
                        .map(|x| x + 0.6 * normal(&mut rng) / (DIM as f32).sqrt()),
                );
            }
            vectors_batch(
                &SONG_EMBEDDINGS,
                songs.iter().map(|s| s.song_id).collect(),
                values,
            )
        })
}

/// `user_features` for users `1..=users`, in batches of `batch_rows`.
pub fn user_features(
    seed: u64,
    users: u64,
    batch_rows: usize,
) -> impl Iterator<Item = RecordBatch> {
    let c = centroids(seed);
    let batch_rows = batch_rows.max(1) as u64;
    (0..users.div_ceil(batch_rows)).map(move |k| {
        let mut rng = Pcg64Mcg::seed_from_u64(seed ^ 0x05E7 ^ (k << 20));
        let first = k * batch_rows + 1;
        let last = (first + batch_rows - 1).min(users);
        let mut values = Vec::with_capacity(((last - first + 1) as usize) * DIM);
        for _ in first..=last {
            let (a, b) = (rng.random_range(0..c.len()), rng.random_range(0..c.len()));
            let w: f32 = rng.random_range(0.5..1.0);
            for (ca, cb) in c[a].iter().zip(&c[b]) {
                values.push(w * ca + (1.0 - w) * cb + 0.8 * normal(&mut rng) / (DIM as f32).sqrt());
            }
        }
        vectors_batch(
            &USER_FEATURES,
            (first as i64..=last as i64).collect(),
            values,
        )
    })
}

/// `subscriptions` active around the month of `date`: pro-rated starts and ends inside the month,
/// churned users who came back (two non-overlapping rows), free plans, every market's currency.
pub fn subscriptions(
    seed: u64,
    users: u64,
    date: NaiveDate,
    home_market: impl Fn(i64) -> usize,
) -> RecordBatch {
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ 0x5083);
    let month_start = days_from_civil(date.year(), date.month(), 1);
    let days_in_month = {
        let next = if date.month() == 12 {
            (date.year() + 1, 1)
        } else {
            (date.year(), date.month() + 1)
        };
        days_from_civil(next.0, next.1, 1) - month_start
    };
    let plan_pick = crate::alias::AliasTable::new(&PLANS.iter().map(|p| p.1).collect::<Vec<_>>());
    let (mut id, mut uid, mut plan, mut country, mut currency, mut price, mut start, mut end) = (
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    let mut next_id = 1i64;
    for user in 1..=users as i64 {
        if rng.random::<f64>() > 0.7 {
            continue; // never signed up
        }
        let m = &MARKETS[home_market(user)];
        let p = &PLANS[plan_pick.sample(&mut rng)];
        // Price in the currency's minor unit, as Decimal128(18,6).
        let minor = m.3 * p.2 / 100;
        let scale =
            10i128.pow(6 - minor_unit_digits(m.1).expect("the markets are ISO 4217 currencies"));
        let mut push = |s: i32, e: Option<i32>, rng: &mut Pcg64Mcg| {
            id.push(next_id);
            next_id += 1;
            uid.push(user);
            plan.push(p.0);
            country.push(m.0);
            currency.push(m.1);
            // A few odd prices, so pro-rating produces real remainders.
            let odd = if rng.random::<f64>() < 0.1 { 7 } else { 0 };
            price.push(if minor == 0 {
                0
            } else {
                (minor + odd) as i128 * scale
            });
            start.push(s);
            end.push(e);
        };
        let r: f64 = rng.random();
        if r < 0.08 {
            // Started inside the month.
            push(
                month_start + rng.random_range(1..days_in_month),
                None,
                &mut rng,
            );
        } else if r < 0.14 {
            // Ended inside the month.
            push(
                month_start - rng.random_range(30..700),
                Some(month_start + rng.random_range(1..days_in_month)),
                &mut rng,
            );
        } else if r < 0.17 {
            // Churned and came back inside the month: two rows, no overlap.
            let gap_start = month_start + rng.random_range(3..days_in_month / 2);
            let back = gap_start + rng.random_range(1..days_in_month / 3);
            push(
                month_start - rng.random_range(30..700),
                Some(gap_start),
                &mut rng,
            );
            push(back, None, &mut rng);
        } else {
            push(month_start - rng.random_range(1..900), None, &mut rng);
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(id)),
        Arc::new(Int64Array::from(uid)),
        Arc::new(StringArray::from(plan)),
        Arc::new(StringArray::from(country)),
        Arc::new(StringArray::from(currency)),
        Arc::new(
            Decimal128Array::from(price)
                .with_precision_and_scale(18, 6)
                .expect("valid decimal"),
        ),
        Arc::new(Date32Array::from(start)),
        Arc::new(Date32Array::from(end)),
    ];
    RecordBatch::try_new(SUBSCRIPTIONS.clone(), columns)
        .expect("subscription columns match the schema")
}

/// (variant, planned weight, true lift of minutes).
type Variant = (&'static str, f64, f64);

/// (experiment, variants, actual-traffic skew of the second variant, which plants a
/// sample-ratio mismatch in `exp-autoplay`). In id order: the rows come out sorted by
/// (experiment_id, user_id), as ab-analytics expects of its upstream.
const EXPERIMENT_PLAN: &[(&str, &[Variant], f64)] = &[
    (
        "exp-autoplay",
        &[("control", 0.5, 0.0), ("treatment", 0.5, 0.0)],
        0.02,
    ),
    (
        "exp-home-feed",
        &[("control", 0.5, 0.0), ("treatment", 0.5, 0.03)],
        0.0,
    ),
    (
        "exp-onboarding",
        &[
            ("control", 0.34, 0.0),
            ("short", 0.33, 0.01),
            ("guided", 0.33, -0.02),
        ],
        0.0,
    ),
];

/// `experiments`, `assignments` and `user_metrics` for the experiments running on `date`.
/// `users_per_experiment` users (at most all users) take part in each.
pub fn experiments(
    seed: u64,
    users: u64,
    users_per_experiment: u64,
    date: NaiveDate,
) -> [RecordBatch; 3] {
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ 0xE8);
    let day = days_from_civil(date.year(), date.month(), date.day());
    let (mut e_id, mut e_var, mut e_w, mut e_ctl, mut e_s, mut e_e) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut a_exp, mut a_user, mut a_var, mut a_at) = (vec![], vec![], vec![], vec![]);
    let (mut m_exp, mut m_user, mut m_min, mut m_sess, mut m_conv, mut m_ret, mut m_pre) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let n = users_per_experiment.min(users).max(1);
    for (k, (exp, variants, skew)) in EXPERIMENT_PLAN.iter().enumerate() {
        let start = day - 14 - 7 * k as i32;
        for (v, w, _) in variants.iter() {
            e_id.push(*exp);
            e_var.push(*v);
            e_w.push(*w);
            e_ctl.push(*v == "control");
            e_s.push(start);
            e_e.push(day);
        }
        let stride = (users / n).max(1);
        for i in 0..n {
            // Ascending within the experiment, and never past the population.
            let user = i * stride + k as u64 % stride + 1;
            let r: f64 = rng.random();
            let mut acc = 0.0;
            let mut vi = variants.len() - 1;
            for (j, (_, w, _)) in variants.iter().enumerate() {
                acc += w + if j == 1 {
                    *skew
                } else if j == 0 {
                    -*skew
                } else {
                    0.0
                };
                if r < acc {
                    vi = j;
                    break;
                }
            }
            let (v, _, lift) = variants[vi];
            a_exp.push(*exp);
            a_user.push(user as i64);
            a_var.push(v);
            a_at.push((start as i64) * 86_400_000 + rng.random_range(0..86_400_000));
            // Minutes are log-normal and strongly tied to the pre-period (what CUPED exploits).
            let taste = normal(&mut rng) as f64;
            let pre = (4.0 + 0.9 * taste + 0.3 * normal(&mut rng) as f64).exp();
            let minutes = (4.0 + 0.9 * taste + 0.3 * normal(&mut rng) as f64).exp() * (1.0 + lift);
            m_exp.push(*exp);
            m_user.push(user as i64);
            m_min.push(minutes);
            m_pre.push(pre);
            m_sess.push((minutes / 25.0).round() as i32 + rng.random_range(0..3));
            m_conv.push(rng.random::<f64>() < 0.05 + lift);
            m_ret.push(rng.random::<f64>() < 0.4 + lift * 2.0);
        }
    }
    let exps = RecordBatch::try_new(
        EXPERIMENTS.clone(),
        vec![
            Arc::new(StringArray::from(e_id)),
            Arc::new(StringArray::from(e_var)),
            Arc::new(Float64Array::from(e_w)),
            Arc::new(BooleanArray::from(e_ctl)),
            Arc::new(Date32Array::from(e_s)),
            Arc::new(Date32Array::from(e_e)),
        ],
    );
    let assign = RecordBatch::try_new(
        ASSIGNMENTS.clone(),
        vec![
            Arc::new(StringArray::from(a_exp)),
            Arc::new(Int64Array::from(a_user)),
            Arc::new(StringArray::from(a_var)),
            Arc::new(TimestampMillisecondArray::from(a_at).with_timezone("UTC")),
        ],
    );
    let metrics = RecordBatch::try_new(
        USER_METRICS.clone(),
        vec![
            Arc::new(StringArray::from(m_exp)),
            Arc::new(Int64Array::from(m_user)),
            Arc::new(Float64Array::from(m_min)),
            Arc::new(Int32Array::from(m_sess)),
            Arc::new(BooleanArray::from(m_conv)),
            Arc::new(BooleanArray::from(m_ret)),
            Arc::new(Float64Array::from(m_pre)),
        ],
    );
    [exps, assign, metrics].map(|b| b.expect("experiment columns match their schemas"))
}
