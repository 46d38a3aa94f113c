//! The weather generator: one maximum temperature (°F) a day.
//!
//! The value for a date is a pure function of (seed, date), so a resumed producer and
//! any checker regenerate exactly the same numbers without storing them.

use time::Date;

use crate::report::{Report, format_date};

/// Long-run mean of the daily maximum for each month, January first (°F).
pub const MONTH_MEANS: [f64; 12] = [
    27.0, 31.0, 44.0, 58.0, 70.0, 79.0, 83.0, 81.0, 74.0, 61.0, 46.0, 32.0,
];

/// Largest shift a seed applies to a month's mean, either way (°F).
const SEED_SHIFT: f64 = 3.0;
/// Scale of the daily noise (°F); the noise is a sum of three uniforms, so at most 3x this.
const NOISE_SCALE: f64 = 4.0;

/// A deterministic climate: the same seed gives the same weather every run.
#[derive(Debug, Clone, Copy)]
pub struct Weather {
    seed: u64,
}

impl Weather {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// This climate's mean for a month: the long-run mean shifted by the seed.
    pub fn month_mean(&self, month: time::Month) -> f64 {
        let index = month as u8 as u64;
        let mut rng = fastrand::Rng::with_seed(mix(self.seed, index));
        MONTH_MEANS[index as usize - 1] + (rng.f64() * 2.0 - 1.0) * SEED_SHIFT
    }

    /// The maximum temperature of `date`, rounded to 4 decimals as it goes on the wire.
    pub fn degrees(&self, date: Date) -> f64 {
        let day = date.to_julian_day() as u64;
        let mut rng = fastrand::Rng::with_seed(mix(self.seed ^ 0xD1B5_4A32_D192_ED03, day));
        let noise: f64 = (0..3).map(|_| rng.f64() * 2.0 - 1.0).sum::<f64>() * NOISE_SCALE;
        ((self.month_mean(date.month()) + noise) * 10_000.0).round() / 10_000.0
    }

    /// The report for `date`.
    pub fn report(&self, date: Date) -> Report {
        Report {
            date: format_date(date),
            degrees: self.degrees(date),
        }
    }
}

/// Combines a seed and a value into one well-spread 64-bit seed (SplitMix64's finaliser).
fn mix(seed: u64, value: u64) -> u64 {
    let mut z = seed ^ value.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn same_seed_and_date_give_the_same_value() {
        let a = Weather::new(7);
        let b = Weather::new(7);
        for offset in 0..400 {
            let day = date!(2000 - 01 - 01) + time::Duration::days(offset);
            assert_eq!(a.degrees(day).to_bits(), b.degrees(day).to_bits());
        }
    }

    #[test]
    fn values_do_not_depend_on_what_was_generated_before() {
        let weather = Weather::new(1);
        let later = weather.degrees(date!(2003 - 07 - 04));
        for offset in 0..100 {
            weather.degrees(date!(2000 - 01 - 01) + time::Duration::days(offset));
        }
        assert_eq!(weather.degrees(date!(2003 - 07 - 04)), later);
    }

    #[test]
    fn seeds_differ_and_stay_near_the_monthly_means() {
        let (a, b) = (Weather::new(1), Weather::new(2));
        let day = date!(2001 - 03 - 15);
        assert_ne!(a.degrees(day), b.degrees(day));
        for month in crate::report::MONTHS {
            let mean = MONTH_MEANS[month as usize - 1];
            let m = a.month_mean(month);
            assert!((m - mean).abs() <= SEED_SHIFT, "{month}: {m} vs {mean}");
        }
        // Over many years, each month's average lands near its shifted mean and the seasons keep their order.
        let year_avg = |month: time::Month| {
            let values: Vec<f64> = (1950..2050)
                .map(|y| a.degrees(Date::from_calendar_date(y, month, 10).unwrap()))
                .collect();
            values.iter().sum::<f64>() / values.len() as f64
        };
        assert!((year_avg(time::Month::July) - a.month_mean(time::Month::July)).abs() < 2.0);
        assert!(year_avg(time::Month::January) + 40.0 < year_avg(time::Month::July));
    }

    #[test]
    fn values_have_at_most_four_decimals() {
        let value = Weather::new(3).degrees(date!(2000 - 12 - 26));
        assert_eq!((value * 10_000.0).round() / 10_000.0, value);
        assert_eq!(
            Weather::new(3).report(date!(2000 - 12 - 26)).date,
            "2000-12-26"
        );
    }
}
