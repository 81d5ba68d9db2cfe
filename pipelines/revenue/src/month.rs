//! The month's calendar, and a subscription's revenue in it to the minor unit.

use chrono::{Datelike, NaiveDate};
use streampulse_core::money::{
    MONEY_SCALE, div_round_half_even, minor_to_decimal, minor_unit_digits,
};

use crate::*;

/// The month's calendar.
#[derive(Debug, Clone, Copy)]
pub struct Month {
    pub first: NaiveDate,
    pub next: NaiveDate,
}

impl Month {
    pub fn new(first: NaiveDate) -> Self {
        let next = if first.month() == 12 {
            NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
        }
        .unwrap_or(first);
        Month { first, next }
    }
    pub fn days(&self) -> i64 {
        (self.next - self.first).num_days()
    }
    pub fn label(&self) -> String {
        self.first.format("%Y-%m").to_string()
    }
    /// Days of the month within `[start, end)` (end `None`: still active).
    pub fn active_days(&self, start: i32, end: Option<i32>) -> i64 {
        let lo = start.max(streampulse_core::time::date32(self.first));
        let hi = end
            .unwrap_or(i32::MAX)
            .min(streampulse_core::time::date32(self.next));
        (hi - lo).max(0) as i64
    }
}

/// A subscription's revenue in the month, in minor units: price (Decimal128 at scale 6, major
/// units) x active days / days in month, rounded half to even.
pub fn subscription_revenue(
    price_raw: i128,
    currency: &str,
    active_days: i64,
    month_days: i64,
) -> Result<i128> {
    let unit = 10i128.pow(MONEY_SCALE - digits(currency)?);
    Ok(div_round_half_even(
        price_raw * active_days as i128,
        unit * month_days as i128,
    ))
}

/// The minor-unit digits of a subscription's currency; an unknown code is bad input (65).
pub(crate) fn digits(currency: &str) -> Result<u32> {
    minor_unit_digits(currency).ok_or_else(|| {
        Error::Core(streampulse_core::Error::InputType {
            file: "subscriptions".into(),
            column: "currency".into(),
            found: format!("{currency:?}"),
            expected: "an ISO 4217 currency code with a minor unit".into(),
            detail: "revenue cannot be split to the minor unit of an unknown currency".into(),
        })
    })
}

/// A market's amount as the `Decimal128(18, 6)` raw value.
pub(crate) fn decimal(minor: i128, currency: &str) -> Result<i128> {
    Ok(minor_to_decimal(minor, digits(currency)?))
}

/// A market: (country, currency).
pub(crate) type Market = (String, String);
