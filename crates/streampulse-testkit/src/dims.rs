//! Small fixed dimensions: markets, platforms, sources, genres, plans, with realistic weights.

/// (country, currency, share of plays, premium monthly price in minor units of the currency).
pub const MARKETS: &[(&str, &str, f64, i64)] = &[
    ("US", "USD", 0.24, 1199),
    ("BR", "BRL", 0.09, 2190),
    ("GB", "GBP", 0.07, 1199),
    ("DE", "EUR", 0.07, 1099),
    ("MX", "MXN", 0.06, 12900),
    ("IN", "INR", 0.06, 11900),
    ("JP", "JPY", 0.05, 980),
    ("FR", "EUR", 0.05, 1111),
    ("ES", "EUR", 0.04, 1099),
    ("IT", "EUR", 0.04, 1099),
    ("CA", "CAD", 0.04, 1199),
    ("SE", "SEK", 0.03, 13900),
    ("KR", "KRW", 0.03, 10900),
    ("AU", "AUD", 0.03, 1399),
    ("NL", "EUR", 0.03, 1199),
    ("PL", "PLN", 0.03, 2399),
    ("ID", "IDR", 0.02, 5499000),
    ("TR", "TRY", 0.02, 9999),
];

pub const PLATFORMS: &[(&str, f64)] = &[
    ("android", 0.38),
    ("ios", 0.30),
    ("desktop", 0.14),
    ("web", 0.08),
    ("speaker", 0.06),
    ("car", 0.04),
];

pub const SOURCES: &[(&str, f64)] = &[
    ("playlist", 0.38),
    ("album", 0.17),
    ("search", 0.12),
    ("radio", 0.10),
    ("recommendation", 0.15),
    ("artist_page", 0.08),
];

pub const GENRES: &[&str] = &[
    "pop",
    "hip-hop",
    "rock",
    "electronic",
    "latin",
    "r&b",
    "k-pop",
    "country",
    "indie",
    "jazz",
    "classical",
    "metal",
    "reggaeton",
    "folk",
    "soul",
];

/// (plan, share of subscribers, price multiplier in percent of the premium price).
pub const PLANS: &[(&str, f64, i64)] = &[
    ("free", 0.45, 0),
    ("premium", 0.33, 100),
    ("student", 0.08, 50),
    ("duo", 0.06, 135),
    ("family", 0.08, 170),
];

/// Weights of play start hours (UTC), a listening day's shape: low at night, peaks at commute and
/// evening.
pub const HOUR_WEIGHTS: [f64; 24] = [
    2.0, 1.4, 1.0, 0.8, 0.8, 1.0, 1.8, 3.2, 4.4, 4.6, 4.4, 4.4, 4.8, 4.8, 4.6, 4.6, 5.0, 5.6, 6.0,
    6.2, 6.0, 5.2, 4.0, 2.8,
];

/// The currency rules live with the revenue arithmetic in the core.
pub use streampulse_core::money::minor_unit_digits;
