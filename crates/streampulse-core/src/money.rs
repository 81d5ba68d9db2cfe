//! Exact money (docs/data.md, revenue): amounts are integers of the currency's minor unit in
//! memory and `Decimal128(18, 6)` of major units in files; never a float.

/// The scale of money columns (`Decimal128(18, 6)`).
pub const MONEY_SCALE: u32 = 6;

/// Digits of the minor unit of every active ISO 4217 currency (the standard's list, amendments
/// to 2025: XCG replacing ANG, ZWG, SLE, VED), sorted by code. A code that is not here, or a
/// fund or metal without a minor unit (XAU, XDR, ...), is no currency revenue can split:
/// [`minor_unit_digits`] says so and the run fails with 65 rather than guessing two decimals
/// (a guess makes a zero-decimal market 100x off).
#[rustfmt::skip]
const ISO_4217: &[(&str, u32)] = &[
    ("AED", 2), ("AFN", 2), ("ALL", 2), ("AMD", 2), ("ANG", 2), ("AOA", 2), ("ARS", 2),
    ("AUD", 2), ("AWG", 2), ("AZN", 2), ("BAM", 2), ("BBD", 2), ("BDT", 2), ("BGN", 2),
    ("BHD", 3), ("BIF", 0), ("BMD", 2), ("BND", 2), ("BOB", 2), ("BOV", 2), ("BRL", 2),
    ("BSD", 2), ("BTN", 2), ("BWP", 2), ("BYN", 2), ("BZD", 2), ("CAD", 2), ("CDF", 2),
    ("CHE", 2), ("CHF", 2), ("CHW", 2), ("CLF", 4), ("CLP", 0), ("CNY", 2), ("COP", 2),
    ("COU", 2), ("CRC", 2), ("CUP", 2), ("CVE", 2), ("CZK", 2), ("DJF", 0), ("DKK", 2),
    ("DOP", 2), ("DZD", 2), ("EGP", 2), ("ERN", 2), ("ETB", 2), ("EUR", 2), ("FJD", 2),
    ("FKP", 2), ("GBP", 2), ("GEL", 2), ("GHS", 2), ("GIP", 2), ("GMD", 2), ("GNF", 0),
    ("GTQ", 2), ("GYD", 2), ("HKD", 2), ("HNL", 2), ("HTG", 2), ("HUF", 2), ("IDR", 2),
    ("ILS", 2), ("INR", 2), ("IQD", 3), ("IRR", 2), ("ISK", 0), ("JMD", 2), ("JOD", 3),
    ("JPY", 0), ("KES", 2), ("KGS", 2), ("KHR", 2), ("KMF", 0), ("KPW", 2), ("KRW", 0),
    ("KWD", 3), ("KYD", 2), ("KZT", 2), ("LAK", 2), ("LBP", 2), ("LKR", 2), ("LRD", 2),
    ("LSL", 2), ("LYD", 3), ("MAD", 2), ("MDL", 2), ("MGA", 2), ("MKD", 2), ("MMK", 2),
    ("MNT", 2), ("MOP", 2), ("MRU", 2), ("MUR", 2), ("MVR", 2), ("MWK", 2), ("MXN", 2),
    ("MXV", 2), ("MYR", 2), ("MZN", 2), ("NAD", 2), ("NGN", 2), ("NIO", 2), ("NOK", 2),
    ("NPR", 2), ("NZD", 2), ("OMR", 3), ("PAB", 2), ("PEN", 2), ("PGK", 2), ("PHP", 2),
    ("PKR", 2), ("PLN", 2), ("PYG", 0), ("QAR", 2), ("RON", 2), ("RSD", 2), ("RUB", 2),
    ("RWF", 0), ("SAR", 2), ("SBD", 2), ("SCR", 2), ("SDG", 2), ("SEK", 2), ("SGD", 2),
    ("SHP", 2), ("SLE", 2), ("SLL", 2), ("SOS", 2), ("SRD", 2), ("SSP", 2), ("STN", 2),
    ("SVC", 2), ("SYP", 2), ("SZL", 2), ("THB", 2), ("TJS", 2), ("TMT", 2), ("TND", 3),
    ("TOP", 2), ("TRY", 2), ("TTD", 2), ("TWD", 2), ("TZS", 2), ("UAH", 2), ("UGX", 0),
    ("USD", 2), ("USN", 2), ("UYI", 0), ("UYU", 2), ("UYW", 4), ("UZS", 2), ("VED", 2),
    ("VES", 2), ("VND", 0), ("VUV", 0), ("WST", 2), ("XAF", 0), ("XCD", 2), ("XCG", 2),
    ("XOF", 0), ("XPF", 0), ("YER", 2), ("ZAR", 2), ("ZMW", 2), ("ZWG", 2), ("ZWL", 2),
];

/// Digits of the currency's minor unit (ISO 4217): 2 for most, 0 for JPY, KRW, XPF and the
/// other zero-decimal currencies, 3 for the dinars, 4 for CLF and UYW; `None` for a code that
/// is no active currency with a minor unit.
pub fn minor_unit_digits(currency: &str) -> Option<u32> {
    ISO_4217
        .binary_search_by(|(code, _)| (*code).cmp(currency))
        .ok()
        .map(|i| ISO_4217[i].1)
}

/// The `Decimal128(18, 6)` raw value of `minor` units of a currency with `digits` decimals.
pub fn minor_to_decimal(minor: i128, digits: u32) -> i128 {
    minor * 10i128.pow(MONEY_SCALE - digits)
}

/// `num / den` rounded half to even (`den > 0`).
pub fn div_round_half_even(num: i128, den: i128) -> i128 {
    let (q, r) = (num.div_euclid(den), num.rem_euclid(den));
    match (2 * r).cmp(&den) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q & 1),
    }
}

/// Splits `pool` minor units over `shares` (key, weight) in proportion to the weights, by the
/// largest-remainder method: each gets `floor(pool x weight / total)`, and the units left over go
/// one each to the largest fractional remainders, equal remainders to the smaller key. The
/// result does not depend on the order of `shares`, and sums to `pool` exactly (when the total
/// weight is positive). Returned in the order of `shares`.
pub fn allocate(pool: i128, shares: &[(i64, u64)]) -> Vec<i128> {
    let total: i128 = shares.iter().map(|s| s.1 as i128).sum();
    if total == 0 {
        return vec![0; shares.len()];
    }
    let mut amounts = Vec::with_capacity(shares.len());
    let mut remainders = Vec::with_capacity(shares.len());
    for (i, &(key, weight)) in shares.iter().enumerate() {
        let exact = pool * weight as i128;
        amounts.push(exact.div_euclid(total));
        remainders.push((exact.rem_euclid(total), key, i));
    }
    let left = pool - amounts.iter().sum::<i128>();
    // Largest remainder first, then the smaller key.
    remainders.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, _, i) in remainders.iter().take(left as usize) {
        amounts[i] += 1;
    }
    amounts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_to_even() {
        assert_eq!(div_round_half_even(5, 2), 2);
        assert_eq!(div_round_half_even(7, 2), 4);
        assert_eq!(div_round_half_even(11, 4), 3);
        assert_eq!(div_round_half_even(9, 4), 2);
        assert_eq!(div_round_half_even(0, 3), 0);
    }

    #[test]
    fn allocation_sums_to_the_pool_and_breaks_ties_by_key() {
        // 100 cents over three equal shares: 33 each, the last cent to the smallest key.
        let got = allocate(100, &[(30, 1), (10, 1), (20, 1)]);
        assert_eq!(got, vec![33, 34, 33]);
        let shares: Vec<(i64, u64)> = (1..=97).map(|k| (k, (k * 7 % 13) as u64 + 1)).collect();
        let got = allocate(123_457, &shares);
        assert_eq!(got.iter().sum::<i128>(), 123_457);
        let mut reversed = shares.clone();
        reversed.reverse();
        let mut again = allocate(123_457, &reversed);
        again.reverse();
        assert_eq!(got, again, "order-independent");
        assert_eq!(allocate(5, &[]), Vec::<i128>::new());
    }

    #[test]
    fn decimals_follow_the_minor_unit() {
        let d = |c| minor_unit_digits(c).unwrap();
        assert_eq!(minor_to_decimal(1199, d("USD")), 11_990_000);
        assert_eq!(minor_to_decimal(980, d("JPY")), 980_000_000);
        assert_eq!(minor_to_decimal(1, d("KWD")), 1_000);
        assert_eq!(minor_to_decimal(1, d("CLF")), 100);
    }

    #[test]
    fn every_zero_decimal_currency_is_known_and_nothing_is_guessed() {
        for c in [
            "BIF", "DJF", "GNF", "KMF", "RWF", "VUV", "XPF", "JPY", "KRW", "CLP",
        ] {
            assert_eq!(minor_unit_digits(c), Some(0), "{c}");
        }
        assert_eq!(minor_unit_digits("CLF"), Some(4));
        for c in ["XAU", "XDR", "usd", "", "EURO", "ZZZ"] {
            assert_eq!(minor_unit_digits(c), None, "{c}");
        }
        assert!(
            ISO_4217.windows(2).all(|w| w[0].0 < w[1].0),
            "the table is sorted (binary search)"
        );
    }

    /// The table agrees with one kept by others: the iso_currency crate (ISO 4217's list, its
    /// maintainers' data). Every code of ours has the crate's minor unit, and every currency the
    /// crate lists as current (neither superseded nor special: metals, SDR, test codes) is ours.
    #[test]
    fn the_table_agrees_with_the_iso_currency_crate() {
        use iso_currency::{Currency, IntoEnumIterator};
        // ANG left ISO's list when XCG replaced it (2025); kept so that a month billed in it
        // still splits.
        let withdrawn = ["ANG"];
        for (code, digits) in ISO_4217 {
            match Currency::from_code(code) {
                Some(c) => assert_eq!(c.exponent().map(u32::from), Some(*digits), "{code}"),
                None => assert!(withdrawn.contains(code), "{code} is not in iso_currency"),
            }
        }
        let mut current = 0;
        for c in Currency::iter() {
            if c.is_superseded().is_none() && !c.is_special() {
                current += 1;
                assert_eq!(
                    minor_unit_digits(c.code()),
                    c.exponent().map(u32::from),
                    "{}",
                    c.code()
                );
            }
        }
        assert!(current > 150, "{current} current currencies");
    }
}
