//! Time expressions ("yesterday", "last Sunday", "two weeks ago", "next
//! month", "last summer", "21 May 2023", "in May 2023", "2023/05/21",
//! "21.05.2023"; in Chinese, Japanese and Korean "2023年5月21日", "5月21日",
//! "昨天", "上周", "三天前", "先月", "지난주"…),
//! resolved against an anchor date into calendar spans, and the index
//! tokens that make them searchable: `dYYYYMMDD` for days of short spans,
//! `mYYYYMM` for months, `yYYYY` for years. A message dated 2023-05-25 that
//! says "last Sunday" gets `d20230521`, which a query about "21 May 2023"
//! also produces. Memories are anchored at their event time (at write time,
//! so no LLM is needed), queries at today.
//!
//! Conventions (documented, not guessed per text): weeks run Monday to
//! Sunday (so "上周日" is the Sunday of last week); numeric dates are read
//! year first (2023/05/21), else day first (21.05.2023) unless only month
//! first is a date (05/21/2023); one whose first two fields could both be
//! months (05/06/2023) is skipped; `last <weekday>` is the most recent such day strictly before the
//! anchor, `next <weekday>` the first strictly after; seasons are those of
//! the northern hemisphere (summer = June to August).

use std::sync::OnceLock;

use chrono::{Datelike, Days, Months, NaiveDate, Weekday};
use regex::Regex;

/// A resolved mention: an inclusive span of days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First day.
    pub start: NaiveDate,
    /// Last day (inclusive).
    pub end: NaiveDate,
}

impl Span {
    /// The single day `d`.
    pub fn day(d: NaiveDate) -> Self {
        Span { start: d, end: d }
    }

    fn month(year: i32, month: u32) -> Option<Self> {
        let start = NaiveDate::from_ymd_opt(year, month, 1)?;
        let end = start.checked_add_months(Months::new(1))?.pred_opt()?;
        Some(Span { start, end })
    }

    fn months(year: i32, first: u32, count: u32) -> Option<Self> {
        let start = NaiveDate::from_ymd_opt(year, first, 1)?;
        let end = start.checked_add_months(Months::new(count))?.pred_opt()?;
        Some(Span { start, end })
    }

    fn year(year: i32) -> Option<Self> {
        Some(Span {
            start: NaiveDate::from_ymd_opt(year, 1, 1)?,
            end: NaiveDate::from_ymd_opt(year, 12, 31)?,
        })
    }

    /// Index tokens: each day of spans up to a week, each month of spans up
    /// to a season, each year of spans up to two years.
    pub fn tokens(&self) -> Vec<String> {
        let days = (self.end - self.start).num_days() + 1;
        let mut out = Vec::new();
        if days <= 7 {
            for i in 0..days as u64 {
                if let Some(d) = self.start.checked_add_days(Days::new(i)) {
                    out.push(format!("d{}", d.format("%Y%m%d")));
                }
            }
        }
        if days <= 92 {
            let mut m = self.start.with_day(1).unwrap_or(self.start);
            while m <= self.end {
                out.push(format!("m{}", m.format("%Y%m")));
                match m.checked_add_months(Months::new(1)) {
                    Some(n) => m = n,
                    None => break,
                }
            }
        }
        if days <= 731 {
            for y in self.start.year()..=self.end.year() {
                out.push(format!("y{y}"));
            }
        }
        out.dedup();
        out
    }
}

const MONTHS: &str = "january|february|march|april|may|june|july|august|september|october|november|december|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec";
const WEEKDAYS: &str = "monday|tuesday|wednesday|thursday|friday|saturday|sunday";
const NUMBERS: &str =
    r"\d{1,3}|an?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|a couple of";

fn month_number(s: &str) -> Option<u32> {
    let i = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ]
    .iter()
    .position(|m| s.starts_with(m))?;
    Some(i as u32 + 1)
}

fn weekday(s: &str) -> Option<Weekday> {
    s.parse().ok()
}

fn number(s: &str) -> Option<u32> {
    Some(match s {
        "a" | "an" | "one" => 1,
        "two" | "a couple of" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        digits => digits.parse().ok()?,
    })
}

fn patterns() -> &'static [(Regex, Rule)] {
    static P: OnceLock<Vec<(Regex, Rule)>> = OnceLock::new();
    P.get_or_init(|| {
        let r = |p: &str| Regex::new(&format!(r"(?i)\b(?:{p})\b")).expect("valid pattern");
        let c = |p: &str| Regex::new(p).expect("valid pattern");
        vec![
            (r(r"(\d{4})-(\d{2})-(\d{2})"), Rule::Iso),
            (
                r(&format!(r"(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?({MONTHS})\.?(?:,?\s+(\d{{4}}))?")),
                Rule::DayMonth,
            ),
            (
                r(&format!(r"({MONTHS})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+(\d{{4}}))?")),
                Rule::MonthDay,
            ),
            (r(&format!(r"(?:in\s+)?({MONTHS})\s+(\d{{4}})")), Rule::MonthYear),
            (r(r"the day before yesterday"), Rule::Offset(-2)),
            (r(r"the day after tomorrow"), Rule::Offset(2)),
            (r(r"yesterday|last night"), Rule::Offset(-1)),
            (r(r"tomorrow"), Rule::Offset(1)),
            (r(r"today|tonight|this (?:morning|afternoon|evening)"), Rule::Offset(0)),
            (r(&format!(r"({NUMBERS})\s+(day|week|month|year)s?\s+ago")), Rule::Ago),
            (r(&format!(r"in\s+({NUMBERS})\s+(day|week|month|year)s?")), Rule::In),
            (r(r"(last|this|next|past)\s+(week|weekend|month|year)"), Rule::Relative),
            (r(&format!(r"(last|this|next|past)\s+({WEEKDAYS})")), Rule::RelativeWeekday),
            // Not "this <month>": "this may be" is far more common than "this May".
            (
                r(&format!(r"(last|next)\s+({MONTHS}|summer|winter|spring|autumn|fall)|(this)\s+(summer|winter|spring|autumn|fall)")),
                Rule::RelativeSeason,
            ),
            (r(r"in\s+((?:19|20)\d{2})"), Rule::Year),
            (r(r"(\d{4})[/.](\d{1,2})[/.](\d{1,2})"), Rule::Iso),
            (r(r"(\d{1,2})[/.](\d{1,2})[/.](\d{4})"), Rule::DayFirst),
            // Scripts without spaces: no word boundaries around these.
            (c(r"(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*[日号號]"), Rule::Iso),
            (c(r"(\d{4})\s*년\s*(\d{1,2})\s*월\s*(\d{1,2})\s*일"), Rule::Iso),
            (c(r"(\d{4})\s*年\s*(\d{1,2})\s*月"), Rule::YearMonth),
            (c(r"(\d{4})\s*년\s*(\d{1,2})\s*월"), Rule::YearMonth),
            (c(r"(\d{1,2})\s*月\s*(\d{1,2})\s*[日号號]"), Rule::NumMonthDay),
            (c(r"(\d{1,2})\s*월\s*(\d{1,2})\s*일"), Rule::NumMonthDay),
            (c(r"(\d{4})\s*[年년]"), Rule::Year),
            (c(&format!(r"({CJK_NUMBERS})\s*(?:个|個|か|ヶ|ケ)?\s*(天|日|周|週間|週|星期|礼拜|禮拜|月|年|일|주|달|개월|년)\s*(?:前|以前|전)")), Rule::CjkAgo),
            (c(r"(上上|下下|上|下|这|這|本)\s*(?:个|個)?\s*(?:周|星期|礼拜|禮拜)\s*([一二三四五六日天])"), Rule::CjkWeekday),
            (c(r"上上\s*(?:个|個)?\s*(?:周|星期|礼拜|禮拜)"), Rule::Shift(-2, "week")),
            (c(r"下下\s*(?:个|個)?\s*(?:周|星期|礼拜|禮拜)"), Rule::Shift(2, "week")),
            (c(r"上上\s*(?:个|個)?\s*月"), Rule::Shift(-2, "month")),
            (c(r"下下\s*(?:个|個)?\s*月"), Rule::Shift(2, "month")),
            (c(r"大后天|大後天"), Rule::Offset(3)),
            (c(r"大前天"), Rule::Offset(-3)),
            (c(r"前天|一昨日|그저께"), Rule::Offset(-2)),
            (c(r"昨天|昨日|昨晚|어제"), Rule::Offset(-1)),
            (c(r"今天|今日|今晚|오늘"), Rule::Offset(0)),
            (c(r"明天|明日|내일"), Rule::Offset(1)),
            (c(r"后天|後天|明後日|모레"), Rule::Offset(2)),
            (c(r"上\s*(?:个|個)?\s*(?:周|星期|礼拜|禮拜)|先週|지난\s*주"), Rule::Shift(-1, "week")),
            (c(r"(?:这|這|本)\s*(?:个|個)?\s*(?:周|星期|礼拜|禮拜)|今週|이번\s*주"), Rule::Shift(0, "week")),
            (c(r"下\s*(?:个|個)?\s*(?:周|星期|礼拜|禮拜)|来週|다음\s*주"), Rule::Shift(1, "week")),
            (c(r"上\s*(?:个|個)?\s*月|先月|지난\s*달"), Rule::Shift(-1, "month")),
            (c(r"(?:这|這|本)\s*(?:个|個)?\s*月|今月|이번\s*달"), Rule::Shift(0, "month")),
            (c(r"下\s*(?:个|個)?\s*月|来月|다음\s*달"), Rule::Shift(1, "month")),
            (c(r"前年|一昨年|재작년"), Rule::Shift(-2, "year")),
            (c(r"去年|昨年|작년"), Rule::Shift(-1, "year")),
            (c(r"今年|올해"), Rule::Shift(0, "year")),
            (c(r"明年|来年|내년"), Rule::Shift(1, "year")),
        ]
    })
}

/// Numbers in Chinese and Japanese time expressions: digits, or numerals
/// up to ninety-nine.
const CJK_NUMBERS: &str = r"\d{1,3}|[一二两兩三四五六七八九十几幾]{1,3}|半";

/// A number written with digits or Chinese numerals ("三", "十二", "二十");
/// "几" (a few) counts as three, "半" (half) is not a count.
fn cjk_number(s: &str) -> Option<u32> {
    if let Ok(n) = s.parse() {
        return Some(n);
    }
    let digit = |c: char| {
        "零一二三四五六七八九"
            .chars()
            .position(|d| d == c)
            .map(|i| i as u32)
            .or(match c {
                '两' | '兩' => Some(2),
                '几' | '幾' => Some(3),
                _ => None,
            })
    };
    let chars: Vec<char> = s.chars().collect();
    match chars.as_slice() {
        [a] if *a == '十' => Some(10),
        [a] => digit(*a),
        ['十', b] => Some(10 + digit(*b)?),
        [a, '十'] => Some(10 * digit(*a)?),
        [a, '十', b] => Some(10 * digit(*a)? + digit(*b)?),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy)]
enum Rule {
    Iso,
    /// Day, month, year in digits (21.05.2023, 21/05/2023).
    DayFirst,
    /// Year and month in digits (2023年5月).
    YearMonth,
    /// Month and day in digits, the anchor's year (5月21日).
    NumMonthDay,
    /// A count of units before the anchor (三天前, 2か月前, 3일 전).
    CjkAgo,
    /// A weekday of last, this or next week (上周日, 这周三).
    CjkWeekday,
    /// The unit `n` units from the anchor's (上个月: -1 month).
    Shift(i64, &'static str),
    DayMonth,
    MonthDay,
    MonthYear,
    Offset(i64),
    Ago,
    In,
    Relative,
    RelativeWeekday,
    RelativeSeason,
    Year,
}

fn shift(anchor: NaiveDate, n: i64) -> Option<NaiveDate> {
    if n >= 0 {
        anchor.checked_add_days(Days::new(n as u64))
    } else {
        anchor.checked_sub_days(Days::new(n.unsigned_abs()))
    }
}

fn week_of(d: NaiveDate) -> Option<Span> {
    let start = shift(d, -i64::from(d.weekday().num_days_from_monday()))?;
    Some(Span {
        start,
        end: shift(start, 6)?,
    })
}

fn units(anchor: NaiveDate, n: i64, unit: &str) -> Option<Span> {
    match unit {
        "day" => Some(Span::day(shift(anchor, n)?)),
        "week" => week_of(shift(anchor, 7 * n)?),
        "month" => {
            let d = if n >= 0 {
                anchor.checked_add_months(Months::new(n as u32))?
            } else {
                anchor.checked_sub_months(Months::new(n.unsigned_abs() as u32))?
            };
            Span::month(d.year(), d.month())
        }
        "year" => Span::year(anchor.year() + n as i32),
        _ => None,
    }
}

fn resolve(rule: Rule, c: &regex::Captures<'_>, anchor: NaiveDate) -> Option<Span> {
    let g = |i: usize| c.get(i).map(|m| m.as_str().to_lowercase());
    let year_or_anchor = |i: usize| g(i).and_then(|y| y.parse().ok()).unwrap_or(anchor.year());
    match rule {
        Rule::Iso => Some(Span::day(NaiveDate::from_ymd_opt(
            g(1)?.parse().ok()?,
            g(2)?.parse().ok()?,
            g(3)?.parse().ok()?,
        )?)),
        Rule::DayMonth => Some(Span::day(NaiveDate::from_ymd_opt(
            year_or_anchor(3),
            month_number(&g(2)?)?,
            g(1)?.parse().ok()?,
        )?)),
        Rule::MonthDay => Some(Span::day(NaiveDate::from_ymd_opt(
            year_or_anchor(3),
            month_number(&g(1)?)?,
            g(2)?.parse().ok()?,
        )?)),
        Rule::MonthYear => Span::month(g(2)?.parse().ok()?, month_number(&g(1)?)?),
        Rule::Offset(n) => Some(Span::day(shift(anchor, n)?)),
        Rule::Ago => units(anchor, -i64::from(number(&g(1)?)?), &g(2)?),
        Rule::In => units(anchor, i64::from(number(&g(1)?)?), &g(2)?),
        Rule::Relative => {
            let n = match g(1)?.as_str() {
                "last" | "past" => -1,
                "next" => 1,
                _ => 0,
            };
            match g(2)?.as_str() {
                "weekend" => {
                    let week = week_of(shift(anchor, 7 * n)?)?;
                    Some(Span {
                        start: shift(week.start, 5)?,
                        end: week.end,
                    })
                }
                unit => units(anchor, n, unit),
            }
        }
        Rule::RelativeWeekday => {
            let want = weekday(&g(2)?)?;
            let from_monday = i64::from(want.num_days_from_monday());
            let today = i64::from(anchor.weekday().num_days_from_monday());
            let day = match g(1)?.as_str() {
                "last" | "past" => {
                    let back = (today - from_monday).rem_euclid(7);
                    shift(anchor, -(if back == 0 { 7 } else { back }))?
                }
                "next" => {
                    let ahead = (from_monday - today).rem_euclid(7);
                    shift(anchor, if ahead == 0 { 7 } else { ahead })?
                }
                _ => shift(anchor, from_monday - today)?,
            };
            Some(Span::day(day))
        }
        Rule::RelativeSeason => {
            let which = g(1).or_else(|| g(3))?;
            let name = g(2).or_else(|| g(4))?;
            let (first, count) = match name.as_str() {
                "spring" => (3, 3),
                "summer" => (6, 3),
                "autumn" | "fall" => (9, 3),
                "winter" => (12, 3),
                m => (month_number(m)?, 1),
            };
            // The occurrence that starts most recently before (last), after
            // (next) or in the anchor's year (this).
            let mut year = anchor.year();
            let starts = |y: i32| NaiveDate::from_ymd_opt(y, first, 1);
            match which.as_str() {
                "last" => {
                    while Span::months(year, first, count)?.end >= anchor {
                        year -= 1;
                    }
                }
                "next" => {
                    while starts(year)? <= anchor {
                        year += 1;
                    }
                }
                _ => {}
            }
            Span::months(year, first, count)
        }
        Rule::Year => Span::year(g(1)?.parse().ok()?),
        Rule::DayFirst => {
            let (a, b): (u32, u32) = (g(1)?.parse().ok()?, g(2)?.parse().ok()?);
            // 05/06/2023 is 5 June or May 6 depending on the writer: skipped;
            // 05/21/2023 can only be month first.
            let (day, month) = match (a <= 12, b <= 12) {
                (true, true) if a != b => return None,
                (true, false) => (b, a),
                _ => (a, b),
            };
            Some(Span::day(NaiveDate::from_ymd_opt(
                g(3)?.parse().ok()?,
                month,
                day,
            )?))
        }
        Rule::YearMonth => Span::month(g(1)?.parse().ok()?, g(2)?.parse().ok()?),
        Rule::NumMonthDay => Some(Span::day(NaiveDate::from_ymd_opt(
            anchor.year(),
            g(1)?.parse().ok()?,
            g(2)?.parse().ok()?,
        )?)),
        Rule::CjkAgo => {
            let n = i64::from(cjk_number(&g(1)?)?);
            let unit = match g(2)?.as_str() {
                "天" | "日" | "일" => "day",
                "周" | "週間" | "週" | "星期" | "礼拜" | "禮拜" | "주" => "week",
                "月" | "달" | "개월" => "month",
                _ => "year",
            };
            units(anchor, -n, unit)
        }
        Rule::CjkWeekday => {
            let weeks = match g(1)?.as_str() {
                "上上" => -2,
                "上" => -1,
                "下" => 1,
                "下下" => 2,
                _ => 0,
            };
            let name = g(2)?.chars().next()?;
            let day = "一二三四五六日"
                .chars()
                .position(|d| d == name)
                .unwrap_or(6);
            let week = week_of(shift(anchor, 7 * weeks)?)?;
            Some(Span::day(shift(week.start, day as i64)?))
        }
        Rule::Shift(n, unit) => units(anchor, n, unit),
    }
}

/// Every time expression in `text`, resolved against `anchor` (the day the
/// text was written, or today for a query). Overlapping matches keep the
/// earliest-listed rule.
pub fn mentions(text: &str, anchor: NaiveDate) -> Vec<Span> {
    let mut taken: Vec<(usize, usize)> = Vec::new();
    let mut out = Vec::new();
    for (re, rule) in patterns() {
        for c in re.captures_iter(text) {
            let m = c.get(0).expect("group 0 always matches");
            if taken.iter().any(|&(s, e)| m.start() < e && s < m.end()) {
                continue;
            }
            if let Some(span) = resolve(*rule, &c, anchor) {
                taken.push((m.start(), m.end()));
                out.push(span);
            }
        }
    }
    out
}

/// The index tokens of every time expression in `text`.
pub fn mention_tokens(text: &str, anchor: NaiveDate) -> Vec<String> {
    let mut out: Vec<String> = mentions(text, anchor)
        .iter()
        .flat_map(Span::tokens)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text, any anchor: no panic, and spans are well formed.
        #[test]
        fn never_panics_and_spans_are_ordered(
            text in "(?i)([a-z0-9 ,.-]|last |next |ago |in |may |sunday |2023 |-05-)*",
            year in 1i32..9999,
            ordinal in 1u32..366,
        ) {
            let anchor = NaiveDate::from_yo_opt(year, ordinal).unwrap();
            for span in mentions(&text, anchor) {
                prop_assert!(span.start <= span.end);
                let _ = span.tokens();
            }
        }
    }

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn one(text: &str, anchor: NaiveDate) -> Span {
        let m = mentions(text, anchor);
        assert_eq!(m.len(), 1, "{text}: {m:?}");
        m[0]
    }

    #[test]
    fn relative_days_and_weekdays() {
        let thu = d(2023, 5, 25); // a Thursday
        assert_eq!(
            one("I ran a charity race last Sunday!", thu),
            Span::day(d(2023, 5, 21))
        );
        assert_eq!(one("yesterday was rough", thu), Span::day(d(2023, 5, 24)));
        assert_eq!(
            one("the day before yesterday", thu),
            Span::day(d(2023, 5, 23))
        );
        assert_eq!(one("see you tomorrow", thu), Span::day(d(2023, 5, 26)));
        assert_eq!(one("last Thursday", thu), Span::day(d(2023, 5, 18)));
        assert_eq!(one("next Monday", thu), Span::day(d(2023, 5, 29)));
        assert_eq!(one("two weeks ago", thu).start, d(2023, 5, 8));
        assert_eq!(one("3 days ago", thu), Span::day(d(2023, 5, 22)));
        assert_eq!(one("in a couple of days", thu), Span::day(d(2023, 5, 27)));
    }

    #[test]
    fn weeks_months_years_and_seasons() {
        let thu = d(2023, 5, 25);
        assert_eq!(
            one("last week", thu),
            Span {
                start: d(2023, 5, 15),
                end: d(2023, 5, 21)
            }
        );
        assert_eq!(
            one("this weekend", thu),
            Span {
                start: d(2023, 5, 27),
                end: d(2023, 5, 28)
            }
        );
        assert_eq!(one("next month", thu), Span::month(2023, 6).unwrap());
        assert_eq!(one("a year ago", thu), Span::year(2022).unwrap());
        assert_eq!(one("last summer", thu), Span::months(2022, 6, 3).unwrap());
        assert_eq!(one("next summer", thu), Span::months(2023, 6, 3).unwrap());
        assert_eq!(one("last March", thu), Span::month(2023, 3).unwrap());
        assert_eq!(one("back in 2019", thu), Span::year(2019).unwrap());
    }

    #[test]
    fn absolute_dates() {
        let any = d(2024, 1, 1);
        assert_eq!(one("on 21 May 2023", any), Span::day(d(2023, 5, 21)));
        assert_eq!(one("May 21st, 2023", any), Span::day(d(2023, 5, 21)));
        assert_eq!(one("2023-05-21", any), Span::day(d(2023, 5, 21)));
        assert_eq!(one("in May 2023", any), Span::month(2023, 5).unwrap());
        assert_eq!(one("the 4th of July", any), Span::day(d(2024, 7, 4)));
        assert!(mentions("I may go, mostly on sundays", any).is_empty());
        assert!(mentions("this may be true", any).is_empty());
        assert_eq!(
            one("this summer", d(2023, 5, 25)),
            Span::months(2023, 6, 3).unwrap()
        );
        assert!(mentions("nothing temporal here", any).is_empty());
    }

    #[test]
    fn other_scripts_and_numeric_dates() {
        let thu = d(2023, 5, 25); // a Thursday
        assert_eq!(
            one("我2023年5月21日去了杭州", thu),
            Span::day(d(2023, 5, 21))
        );
        assert_eq!(one("5月21号那天下雨", thu), Span::day(d(2023, 5, 21)));
        assert_eq!(one("2023年5月", thu), Span::month(2023, 5).unwrap());
        assert_eq!(one("2023년 5월 21일", thu), Span::day(d(2023, 5, 21)));
        assert_eq!(one("我昨天买了牛奶", thu), Span::day(d(2023, 5, 24)));
        assert_eq!(one("前天", thu), Span::day(d(2023, 5, 23)));
        assert_eq!(one("三天前", thu), Span::day(d(2023, 5, 22)));
        assert_eq!(one("两个月前", thu), Span::month(2023, 3).unwrap());
        assert_eq!(one("3か月前", thu), Span::month(2023, 2).unwrap());
        assert_eq!(one("十二天前", thu), Span::day(d(2023, 5, 13)));
        assert_eq!(one("上周日我们见面了", thu), Span::day(d(2023, 5, 21)));
        assert_eq!(one("这周三", thu), Span::day(d(2023, 5, 24)));
        assert_eq!(one("下下周日晚上七点", thu), Span::day(d(2023, 6, 11)));
        assert_eq!(one("上上周", thu).start, d(2023, 5, 8));
        assert_eq!(one("大后天", thu), Span::day(d(2023, 5, 28)));
        assert_eq!(one("上个月", thu), Span::month(2023, 4).unwrap());
        assert_eq!(one("先月", thu), Span::month(2023, 4).unwrap());
        assert_eq!(one("去年", thu), Span::year(2022).unwrap());
        assert_eq!(one("지난주", thu).start, d(2023, 5, 15));
        assert_eq!(one("上周", thu).end, d(2023, 5, 21));
        assert_eq!(one("on 2023/05/21", thu), Span::day(d(2023, 5, 21)));
        assert_eq!(one("am 21.05.2023", thu), Span::day(d(2023, 5, 21)));
        assert_eq!(one("le 21/05/2023", thu), Span::day(d(2023, 5, 21)));
        assert_eq!(one("on 05/21/2023", thu), Span::day(d(2023, 5, 21)));
        // Day or month first? Not guessed.
        assert!(mentions("on 05/06/2023", thu).is_empty());
        assert_eq!(cjk_number("二十"), Some(20));
        assert_eq!(cjk_number("二十三"), Some(23));
        assert_eq!(cjk_number("半"), None);
        // The same day asked in Chinese and said in English.
        let said = mention_tokens("I ran a charity race last Sunday", thu);
        let asked = mention_tokens("2023年5月21日发生了什么？", d(2026, 1, 1));
        assert!(asked.iter().any(|t| said.contains(t)), "{asked:?}");
    }

    #[test]
    fn tokens_match_between_a_resolved_mention_and_a_query_date() {
        let said = mention_tokens("I ran a charity race last Sunday", d(2023, 5, 25));
        let asked = mention_tokens("What happened on 21 May 2023?", d(2026, 1, 1));
        assert!(said.contains(&"d20230521".to_string()), "{said:?}");
        assert!(asked.contains(&"d20230521".to_string()), "{asked:?}");
        assert!(mention_tokens("in May 2023", d(2026, 1, 1)).contains(&"m202305".to_string()));
        // Long spans get coarse tokens only.
        let year = Span::year(2022).unwrap().tokens();
        assert_eq!(year, ["y2022"]);
    }
}
