//! Exact money (DATA.md, revenue rules): amounts are integers of the currency's minor unit in
//! memory and `Decimal128(18, 6)` of major units in files; never a float.

/// The scale of money columns (`Decimal128(18, 6)`).
pub const MONEY_SCALE: u32 = 6;

/// Digits of the currency's minor unit (ISO 4217): 2 for most, 0 for JPY and KRW, 3 for the
/// dinars.
pub fn minor_unit_digits(currency: &str) -> u32 {
    match currency {
        "JPY" | "KRW" | "CLP" | "VND" | "ISK" | "UGX" | "PYG" | "XAF" | "XOF" => 0,
        "BHD" | "KWD" | "OMR" | "JOD" | "TND" | "IQD" | "LYD" => 3,
        _ => 2,
    }
}

/// The `Decimal128(18, 6)` raw value of `minor` units of `currency`.
pub fn minor_to_decimal(minor: i128, currency: &str) -> i128 {
    minor * 10i128.pow(MONEY_SCALE - minor_unit_digits(currency))
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
        assert_eq!(minor_to_decimal(1199, "USD"), 11_990_000);
        assert_eq!(minor_to_decimal(980, "JPY"), 980_000_000);
        assert_eq!(minor_to_decimal(1, "KWD"), 1_000);
    }
}
