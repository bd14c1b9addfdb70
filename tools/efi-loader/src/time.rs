//! Calendar time to UNIX time, for the Date at Boot response.

/// Seconds since 1970-01-01T00:00:00 UTC of a proleptic Gregorian date and time.
/// `month` is 1..=12, `day` 1..=31.
pub fn unix_time(year: i64, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> i64 {
    // Count days in a calendar whose years start on 1 March, so the leap day is last.
    let (year, month) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * i64::from(month) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    days * 86_400 + i64::from(hour) * 3_600 + i64::from(minute) * 60 + i64::from(second)
}

#[cfg(test)]
mod tests {
    use super::unix_time;

    #[test]
    fn known_dates() {
        assert_eq!(unix_time(1970, 1, 1, 0, 0, 0), 0);
        assert_eq!(unix_time(2000, 3, 1, 0, 0, 0), 951_868_800);
        assert_eq!(unix_time(2024, 2, 29, 12, 34, 56), 1_709_210_096);
        assert_eq!(unix_time(1969, 12, 31, 23, 59, 59), -1);
        assert_eq!(unix_time(2038, 1, 19, 3, 14, 8), 1 << 31);
    }
}
