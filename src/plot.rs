//! The bar chart of monthly averages, as an SVG document: `weather plot`'s `month.svg` and
//! the dashboard's live chart both come from here.

use svg::Document;
use svg::node::element::{Group, Line, Rectangle, Text, Title};
use time::Month;

use crate::report::month_name;
use crate::stats::PartitionStats;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 72.0;
const BOTTOM: f64 = 64.0;
const HIGHLIGHT_FILL: &str = "#3e7cb1";
const OTHER_FILL: &str = "#b6c8da";

/// The months the seed's plot is about; the dashboard draws all twelve and stresses these.
pub const HIGHLIGHTED: [Month; 3] = [Month::January, Month::February, Month::March];

/// One bar: a month's average in the chosen year, if that month has data.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub month: Month,
    pub avg: Option<f64>,
    pub count: u64,
}

/// The bars for `months` of `year`, in the order given.
pub fn bars(stats: &PartitionStats, months: &[Month], year: i32) -> Vec<Bar> {
    months
        .iter()
        .map(|&month| match stats.get(month, year) {
            Some(m) => Bar {
                month,
                avg: Some(m.avg()),
                count: m.count,
            },
            None => Bar {
                month,
                avg: None,
                count: 0,
            },
        })
        .collect()
}

/// A bar chart of average maximum temperature per month, for one year; bars of the
/// `highlight` months are drawn strong, the others pale.
pub fn month_chart(bars: &[Bar], year: i32, highlight: &[Month]) -> Document {
    let values: Vec<f64> = bars.iter().filter_map(|b| b.avg).collect();
    let (low, high) = axis_range(&values);
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let y = |v: f64| TOP + plot_height * (high - v) / (high - low);

    let mut doc = Document::new()
        .set("xmlns", "http://www.w3.org/2000/svg")
        .set("viewBox", (0, 0, WIDTH, HEIGHT))
        .set("width", WIDTH)
        .set("height", HEIGHT)
        .set(
            "font-family",
            "system-ui, -apple-system, 'Segoe UI', sans-serif",
        )
        .add(Title::new(format!("Average maximum temperature, {year}")))
        .add(
            Rectangle::new()
                .set("width", WIDTH)
                .set("height", HEIGHT)
                .set("fill", "#ffffff"),
        )
        .add(
            Text::new(format!("Average maximum temperature, {year}"))
                .set("x", WIDTH / 2.0)
                .set("y", 32)
                .set("text-anchor", "middle")
                .set("font-size", 20)
                .set("font-weight", "600")
                .set("fill", "#1f2933"),
        )
        .add(
            Text::new("°F, mean of the daily maximum")
                .set("x", WIDTH / 2.0)
                .set("y", 54)
                .set("text-anchor", "middle")
                .set("font-size", 13)
                .set("fill", "#616e7c"),
        );

    // Horizontal grid and the degrees axis.
    let step = tick_step(high - low);
    let mut axis = Group::new().set("class", "axis");
    let mut tick = low;
    while tick <= high + 1e-9 {
        axis = axis
            .add(
                Line::new()
                    .set("x1", LEFT)
                    .set("x2", WIDTH - RIGHT)
                    .set("y1", y(tick))
                    .set("y2", y(tick))
                    .set("stroke", if tick == 0.0 { "#616e7c" } else { "#e4e7eb" })
                    .set("stroke-width", 1),
            )
            .add(
                Text::new(format!("{tick:.0}°"))
                    .set("x", LEFT - 8.0)
                    .set("y", y(tick) + 4.0)
                    .set("text-anchor", "end")
                    .set("font-size", 12)
                    .set("fill", "#616e7c"),
            );
        tick += step;
    }
    axis = axis.add(
        Line::new()
            .set("x1", LEFT)
            .set("x2", LEFT)
            .set("y1", TOP)
            .set("y2", TOP + plot_height)
            .set("stroke", "#616e7c"),
    );
    doc = doc.add(axis);

    let band = plot_width / bars.len().max(1) as f64;
    // Twelve full month names do not fit side by side: crowded charts use abbreviations.
    let crowded = bars.len() > 6;
    let value_size = if crowded { 12 } else { 14 };
    let baseline = y(0.0_f64.clamp(low, high));
    let mut group = Group::new().set("class", "bars");
    for (i, bar) in bars.iter().enumerate() {
        let name = month_name(bar.month);
        let label = if crowded { &name[..3] } else { name };
        let fill = if highlight.contains(&bar.month) {
            HIGHLIGHT_FILL
        } else {
            OTHER_FILL
        };
        let centre = LEFT + band * (i as f64 + 0.5);
        let width = (band * 0.6).min(120.0);
        group = group.add(
            Text::new(label)
                .set("x", centre)
                .set("y", TOP + plot_height + 22.0)
                .set("text-anchor", "middle")
                .set("font-size", 13)
                .set("fill", "#1f2933"),
        );
        let Some(avg) = bar.avg else {
            group = group.add(
                Text::new("no data")
                    .set("x", centre)
                    .set("y", baseline - 8.0)
                    .set("text-anchor", "middle")
                    .set("font-size", 12)
                    .set("fill", "#9aa5b1"),
            );
            continue;
        };
        let (top, bottom) = (y(avg).min(baseline), y(avg).max(baseline));
        group = group
            .add(
                Rectangle::new()
                    .set("class", "bar")
                    .set("data-month", name)
                    .set("data-avg", format!("{avg:.2}"))
                    .set("x", centre - width / 2.0)
                    .set("y", top)
                    .set("width", width)
                    .set("height", (bottom - top).max(0.5))
                    .set("rx", 3)
                    .set("fill", fill)
                    .add(Title::new(format!(
                        "{name} {year}: {avg:.2} °F over {} days",
                        bar.count
                    ))),
            )
            .add(
                Text::new(format!("{avg:.1}°F"))
                    .set("x", centre)
                    .set("y", top - 8.0)
                    .set("text-anchor", "middle")
                    .set("font-size", value_size)
                    .set("font-weight", "600")
                    .set("fill", "#1f2933"),
            )
            .add(
                Text::new(if crowded {
                    format!("{}d", bar.count)
                } else {
                    format!("{} days", bar.count)
                })
                .set("x", centre)
                .set("y", TOP + plot_height + 40.0)
                .set("text-anchor", "middle")
                .set("font-size", 11)
                .set("fill", "#9aa5b1"),
            );
    }
    doc.add(group)
}

/// The axis span: from zero (or below, for frost) to a round number above the top bar.
fn axis_range(values: &[f64]) -> (f64, f64) {
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    let min = values.iter().copied().fold(0.0_f64, f64::min);
    let high = ((max + 5.0) / 10.0).ceil() * 10.0;
    let low = (min / 10.0).floor() * 10.0;
    (low, high.max(low + 10.0))
}

fn tick_step(span: f64) -> f64 {
    if span > 150.0 { 20.0 } else { 10.0 }
}

/// Parses `--months`: English names or three-letter abbreviations, any case.
pub fn parse_months(text: &str) -> Result<Vec<Month>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|word| {
            crate::report::MONTHS
                .into_iter()
                .find(|m| {
                    let name = month_name(*m);
                    name.eq_ignore_ascii_case(word)
                        || (word.len() == 3 && name[..3].eq_ignore_ascii_case(word))
                })
                .ok_or_else(|| {
                    format!("{word:?} is not a month (try January,February,March or jan,feb,mar)")
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|months| {
            if months.is_empty() {
                Err("no months given".into())
            } else {
                Ok(months)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::DayReading;
    use time::macros::date;

    fn stats() -> PartitionStats {
        let mut stats = PartitionStats::default();
        for (date, degrees) in [
            (date!(2001 - 01 - 01), 20.0),
            (date!(2001 - 01 - 02), 30.0),
            (date!(2001 - 03 - 01), 44.0),
        ] {
            stats.add(&DayReading { date, degrees });
        }
        stats
    }

    #[test]
    fn bars_take_the_averages_of_the_year() {
        let bars = bars(
            &stats(),
            &[Month::January, Month::February, Month::March],
            2001,
        );
        assert_eq!(bars[0].avg, Some(25.0));
        assert_eq!(bars[0].count, 2);
        assert_eq!(bars[1].avg, None);
        assert_eq!(bars[2].avg, Some(44.0));
    }

    #[test]
    fn chart_draws_one_rect_per_month_with_data_and_labels_the_values() {
        let months = [Month::January, Month::February, Month::March];
        let svg = month_chart(&bars(&stats(), &months, 2001), 2001, &HIGHLIGHTED).to_string();
        assert_eq!(svg.matches("class=\"bar\"").count(), 2);
        assert!(svg.contains("Average maximum temperature, 2001"));
        assert!(svg.contains("25.0°F") && svg.contains("44.0°F"));
        assert!(svg.contains("no data"));
        // The document parses as SVG.
        let events = svg::read(&svg).unwrap().count();
        assert!(events > 10);
    }

    #[test]
    fn taller_average_gives_taller_bar() {
        let months = [Month::January, Month::March];
        let svg = month_chart(&bars(&stats(), &months, 2001), 2001, &HIGHLIGHTED).to_string();
        let heights: Vec<f64> = svg
            .split("class=\"bar\"")
            .skip(1)
            .map(|rest| {
                let h = rest.split("height=\"").nth(1).unwrap();
                h[..h.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        assert_eq!(heights.len(), 2);
        assert!(
            (heights[1] / heights[0] - 44.0 / 25.0).abs() < 1e-6,
            "{heights:?}"
        );
    }

    #[test]
    fn twelve_months_abbreviate_and_stress_only_the_highlighted_ones() {
        let svg = month_chart(
            &bars(&stats(), &crate::report::MONTHS, 2001),
            2001,
            &[Month::January],
        )
        .to_string();
        let abbreviations: Vec<&str> = crate::report::MONTHS
            .iter()
            .map(|m| &month_name(*m)[..3])
            .collect();
        let labels: Vec<&str> = svg.lines().filter(|l| abbreviations.contains(l)).collect();
        assert_eq!(labels, abbreviations, "{svg}");
        assert!(!svg.lines().any(|l| l == "January"), "{svg}");
        let fill_of = |month: &str| {
            let rest = svg
                .split(&format!("data-month=\"{month}\""))
                .nth(1)
                .unwrap();
            let f = rest.split("fill=\"").nth(1).unwrap();
            f[..f.find('"').unwrap()].to_string()
        };
        assert_eq!(fill_of("January"), HIGHLIGHT_FILL);
        assert_eq!(fill_of("March"), OTHER_FILL);
    }

    #[test]
    fn months_parse_from_names_and_abbreviations() {
        assert_eq!(
            parse_months("January,feb, MAR").unwrap(),
            vec![Month::January, Month::February, Month::March]
        );
        assert!(parse_months("Jan,Smarch").unwrap_err().contains("Smarch"));
        assert!(parse_months("").is_err());
    }
}
