//! Bar charts of a statistics summary: the success rate per currency and the top merchants by
//! gross volume (one panel per currency, never compared across currencies), as PNG or SVG bytes.

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use rust_decimal::Decimal;

use super::{
    check_size, draw_error, render as render_chart, ChartError, ChartFormat, Drawing, FONT_FAMILY,
    LABEL_FONT_PX, TITLE_FONT_PX,
};
use settle_domain::money::Money;
use settle_domain::stats::{CurrencySummary, MerchantVolume};

const BAR_COLOR: RGBColor = RGBColor(31, 119, 180);
const TRACK_COLOR: RGBColor = RGBColor(230, 234, 240);
/// A success rate is drawn in basis points: 10 000 is 100 %.
const FULL_RATE_BP: i64 = 10_000;
/// Vertical space of one bar row and of a panel's title.
const ROW_HEIGHT_PX: u32 = 26;
const TITLE_HEIGHT_PX: u32 = 34;
/// Horizontal space for the row labels (merchant id, currency) and the value labels.
const LABEL_WIDTH_PX: u32 = 150;
const VALUE_WIDTH_PX: u32 = 130;

/// One bar: its label, its length as a share of the panel's `full` value, and the text beside it.
struct Bar {
    label: String,
    value: i64,
    value_label: String,
}

/// A titled group of bars measured against the same `full` value.
struct Panel {
    title: String,
    full: i64,
    bars: Vec<Bar>,
}

/// One bar per currency: completed / decided payments, 0–100 %.
pub fn render_success_rates(
    currencies: &[CurrencySummary],
    format: ChartFormat,
    width_px: u32,
    height_px: u32,
) -> Result<Vec<u8>, ChartError> {
    let mut bars = Vec::with_capacity(currencies.len());
    for summary in currencies {
        let rate_bp = rate_basis_points(&summary.success_rate)?;
        bars.push(Bar {
            label: summary.currency.code().to_string(),
            value: rate_bp,
            value_label: percent_label(rate_bp),
        });
    }
    let panel = Panel {
        title: "Success rate per currency".to_string(),
        full: FULL_RATE_BP,
        bars,
    };
    render(&[panel], format, width_px, height_px)
}

/// One panel per currency (by code) with its merchants by gross volume, largest first.
pub fn render_top_merchants(
    merchants: &[MerchantVolume],
    format: ChartFormat,
    width_px: u32,
    height_px: u32,
) -> Result<Vec<u8>, ChartError> {
    let mut by_code: BTreeMap<&str, Vec<&MerchantVolume>> = BTreeMap::new();
    for merchant in merchants {
        by_code
            .entry(merchant.currency.code())
            .or_default()
            .push(merchant);
    }
    let panels: Vec<Panel> = by_code
        .into_iter()
        .map(|(code, mut volumes)| {
            volumes.sort_by(|a, b| {
                b.gross_minor
                    .cmp(&a.gross_minor)
                    .then(a.merchant_id.cmp(&b.merchant_id))
            });
            Panel {
                title: format!("{code} — top merchants by gross volume"),
                full: volumes.iter().map(|v| v.gross_minor).max().unwrap_or(0),
                bars: volumes
                    .iter()
                    .map(|v| Bar {
                        label: v.merchant_id.clone(),
                        value: v.gross_minor,
                        value_label: Money::new(v.gross_minor, v.currency).to_string(),
                    })
                    .collect(),
            }
        })
        .collect();
    render(&panels, format, width_px, height_px)
}

/// `"0.9876"` → 9876 basis points; anything outside 0–1 or not a decimal is refused.
fn rate_basis_points(rate: &str) -> Result<i64, ChartError> {
    let invalid = || ChartError::Draw(format!("success rate {rate:?} is not a decimal in 0–1"));
    let decimal: Decimal = rate.parse().map_err(|_| invalid())?;
    if decimal < Decimal::ZERO || decimal > Decimal::ONE {
        return Err(invalid());
    }
    let basis_points = (decimal * Decimal::from(FULL_RATE_BP)).round();
    i64::try_from(basis_points).map_err(|_| invalid())
}

/// 9876 → `"98.76 %"`.
fn percent_label(rate_bp: i64) -> String {
    format!("{}.{:02} %", rate_bp / 100, rate_bp % 100)
}

fn render(
    panels: &[Panel],
    format: ChartFormat,
    width_px: u32,
    height_px: u32,
) -> Result<Vec<u8>, ChartError> {
    check_size(width_px, height_px)?;
    if panels.iter().all(|panel| panel.bars.is_empty()) {
        return Err(ChartError::NoData);
    }
    let needed_px: u32 = panels
        .iter()
        .map(|p| TITLE_HEIGHT_PX + ROW_HEIGHT_PX * u32::try_from(p.bars.len()).unwrap_or(u32::MAX))
        .fold(0, u32::saturating_add);
    if needed_px > height_px {
        return Err(ChartError::TooManyPanels {
            height: height_px,
            panels: panels.len(),
        });
    }
    render_chart(&Bars(panels), format, width_px, height_px)
}

/// The panels of a bar chart, drawn one below the other.
struct Bars<'a>(&'a [Panel]);

impl Drawing for Bars<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), ChartError> {
        draw(root, self.0)
    }
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    panels: &[Panel],
) -> Result<(), ChartError> {
    root.fill(&WHITE).map_err(draw_error)?;
    let (width_px, _) = root.dim_in_pixel();
    let track_px = i64::from(
        width_px
            .saturating_sub(LABEL_WIDTH_PX + VALUE_WIDTH_PX + 16)
            .max(1),
    );
    let title_style = TextStyle::from((FONT_FAMILY, TITLE_FONT_PX).into_font())
        .pos(Pos::new(HPos::Left, VPos::Center));
    let label_style = TextStyle::from((FONT_FAMILY, LABEL_FONT_PX).into_font())
        .pos(Pos::new(HPos::Right, VPos::Center));
    let value_style = TextStyle::from((FONT_FAMILY, LABEL_FONT_PX).into_font())
        .pos(Pos::new(HPos::Left, VPos::Center));
    let track_start = i32::try_from(LABEL_WIDTH_PX).unwrap_or(i32::MAX);
    let track_end = track_start + i32::try_from(track_px).unwrap_or(i32::MAX);
    let mut y = 0_i32;
    let row = i32::try_from(ROW_HEIGHT_PX).unwrap_or(i32::MAX);
    for panel in panels {
        let title_y = y + i32::try_from(TITLE_HEIGHT_PX / 2).unwrap_or(0);
        root.draw(&Text::new(
            panel.title.clone(),
            (8, title_y),
            title_style.clone(),
        ))
        .map_err(draw_error)?;
        y += i32::try_from(TITLE_HEIGHT_PX).unwrap_or(i32::MAX);
        for bar in &panel.bars {
            let middle = y + row / 2;
            root.draw(&Text::new(
                shorten(&bar.label, 20),
                (track_start - 8, middle),
                label_style.clone(),
            ))
            .map_err(draw_error)?;
            root.draw(&Rectangle::new(
                [(track_start, y + 4), (track_end, y + row - 4)],
                TRACK_COLOR.filled(),
            ))
            .map_err(draw_error)?;
            let length = bar_length_px(bar.value, panel.full, track_px);
            if length > 0 {
                root.draw(&Rectangle::new(
                    [(track_start, y + 4), (track_start + length, y + row - 4)],
                    BAR_COLOR.filled(),
                ))
                .map_err(draw_error)?;
            }
            root.draw(&Text::new(
                bar.value_label.clone(),
                (track_end + 8, middle),
                value_style.clone(),
            ))
            .map_err(draw_error)?;
            y += row;
        }
    }
    Ok(())
}

/// The pixels of a bar worth `value` on a track of `track_px` worth `full`, in integers (i128,
/// so any i64 amount fits): never negative, never past the track.
fn bar_length_px(value: i64, full: i64, track_px: i64) -> i32 {
    if full <= 0 || value <= 0 {
        return 0;
    }
    let length = i128::from(value.min(full)) * i128::from(track_px) / i128::from(full);
    i32::try_from(length).unwrap_or(i32::MAX)
}

/// At most `max_chars` characters, the rest replaced by an ellipsis.
fn shorten(label: &str, max_chars: usize) -> String {
    if label.chars().count() <= max_chars {
        label.to_string()
    } else {
        let kept: String = label.chars().take(max_chars - 1).collect();
        format!("{kept}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use settle_domain::model::SettlementFigures;
    use settle_domain::money::Currency;

    fn currency(code: &str) -> Currency {
        Currency::from_code(code).unwrap()
    }

    fn summary(code: &str, rate: &str) -> CurrencySummary {
        CurrencySummary {
            currency: currency(code),
            days: 1,
            figures: SettlementFigures::default(),
            gross: "0".into(),
            fees: "0".into(),
            net: "0".into(),
            success_rate: rate.into(),
        }
    }

    fn merchant(id: &str, code: &str, gross_minor: i64) -> MerchantVolume {
        MerchantVolume {
            merchant_id: id.into(),
            currency: currency(code),
            gross_minor,
            gross: Money::new(gross_minor, currency(code)).to_string(),
            net_minor: gross_minor,
            transaction_count: 1,
        }
    }

    fn texts(svg: &[u8]) -> Vec<String> {
        let svg = std::str::from_utf8(svg).unwrap();
        svg.split("<text")
            .skip(1)
            .filter_map(|rest| {
                let body = &rest[rest.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_string())
            })
            .collect()
    }

    #[test]
    fn success_rates_are_labelled_in_exact_percent() {
        let svg = render_success_rates(
            &[summary("USD", "0.9876"), summary("KWD", "1.0000")],
            ChartFormat::Svg,
            800,
            300,
        )
        .unwrap();
        let texts = texts(&svg);
        for expected in [
            "98.76 %",
            "100.00 %",
            "USD",
            "KWD",
            "Success rate per currency",
        ] {
            assert!(texts.iter().any(|t| t == expected), "{expected}: {texts:?}");
        }
    }

    #[test]
    fn a_malformed_rate_is_refused_not_drawn() {
        for rate in ["1.5", "-0.1", "ninety"] {
            let error = render_success_rates(&[summary("USD", rate)], ChartFormat::Png, 800, 300)
                .unwrap_err();
            assert!(error.to_string().contains(rate), "{error}");
        }
    }

    #[test]
    fn top_merchants_get_one_panel_per_currency_largest_first() {
        let svg = render_top_merchants(
            &[
                merchant("m-small", "USD", 1_000),
                merchant("m-big", "USD", 250_075),
                merchant("m-kw", "KWD", 12_345),
            ],
            ChartFormat::Svg,
            900,
            400,
        )
        .unwrap();
        let texts = texts(&svg);
        let at = |needle: &str| texts.iter().position(|t| t == needle).unwrap();
        assert!(
            at("KWD — top merchants by gross volume") < at("USD — top merchants by gross volume")
        );
        assert!(at("m-big") < at("m-small"), "{texts:?}");
        assert!(texts.iter().any(|t| t == "2500.75"), "{texts:?}");
        assert!(texts.iter().any(|t| t == "12.345"), "{texts:?}");
    }

    #[test]
    fn bar_lengths_are_proportional_integers_within_the_track() {
        assert_eq!(bar_length_px(5_000, 10_000, 400), 200);
        assert_eq!(bar_length_px(i64::MAX, i64::MAX, 400), 400);
        assert_eq!(bar_length_px(1, i64::MAX, 400), 0);
        assert_eq!(bar_length_px(-5, 10, 400), 0);
        assert_eq!(bar_length_px(20, 10, 400), 400);
    }

    #[test]
    fn empty_or_too_many_rows_are_refused() {
        assert!(matches!(
            render_top_merchants(&[], ChartFormat::Png, 800, 400),
            Err(ChartError::NoData)
        ));
        let many: Vec<MerchantVolume> = (0..40)
            .map(|i| merchant(&format!("m{i}"), "USD", 100 + i))
            .collect();
        assert!(matches!(
            render_top_merchants(&many, ChartFormat::Png, 800, 400),
            Err(ChartError::TooManyPanels { .. })
        ));
    }

    #[test]
    fn png_is_a_picture_with_bars() {
        let png =
            render_top_merchants(&[merchant("m", "USD", 100)], ChartFormat::Png, 640, 200).unwrap();
        let image = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!((image.width(), image.height()), (640, 200));
        assert!(image
            .pixels()
            .any(|p| p.0 == [BAR_COLOR.0, BAR_COLOR.1, BAR_COLOR.2]));
    }
}
