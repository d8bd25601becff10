//! Charts of settled days: one panel per currency with the daily gross, fees and net lines,
//! rendered in memory as PNG or SVG bytes with an embedded font, using integer minor units only.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{NaiveDate, TimeDelta};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use settle_domain::money::{Currency, Money};
pub use settle_domain::stats::DailyPoint;

mod bars;

pub use self::bars::{render_success_rates, render_top_merchants};

/// The font every chart is drawn with, embedded so charts render on machines with no fonts
/// installed. DejaVu Sans; its licence is in `core/assets/DejaVuSans.LICENSE`.
static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// The family name the embedded font is registered under and every text style uses.
pub(crate) const FONT_FAMILY: &str = "sans-serif";

/// The panel title size on wide charts; narrow ones shrink it so the title fits.
pub(crate) const TITLE_FONT_PX: u32 = 18;
pub(crate) const LABEL_FONT_PX: u32 = 12;
/// The smallest and largest sizes, in pixels, a chart may have.
const MIN_WIDTH_PX: u32 = 320;
const MIN_HEIGHT_PX: u32 = 100;
const MAX_SIDE_PX: u32 = 8192;
/// The strip to the right of each panel's plot that holds its legend.
const LEGEND_WIDTH_PX: u32 = 80;
/// The smallest panel height that still leaves room for a title, a plot and the date labels.
const MIN_PANEL_HEIGHT_PX: u32 = 120;
/// Amounts beyond this many minor units (in either direction) are refused rather than charted:
/// plotters' integer tick computation overflows near the ends of the `i64` range.
const MAX_CHART_MAGNITUDE: i64 = 100_000_000_000_000_000;

const GROSS_COLOR: RGBColor = RGBColor(31, 119, 180);
const FEES_COLOR: RGBColor = RGBColor(214, 39, 40);
const NET_COLOR: RGBColor = RGBColor(44, 160, 44);

/// One line of a panel: its legend name, its colour and the amount it plots.
type SeriesSpec = (&'static str, RGBColor, fn(&DailyPoint) -> i64);

const SERIES: [SeriesSpec; 3] = [
    ("gross", GROSS_COLOR, |p| p.gross_minor),
    ("fees", FEES_COLOR, |p| p.fees_minor),
    ("net", NET_COLOR, |p| p.net_minor),
];

/// The file format a chart is rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartFormat {
    Png,
    Svg,
}

impl ChartFormat {
    /// Picks the format from the file extension (`.png` or `.svg`, in any letter case).
    pub fn from_path(path: &Path) -> Result<ChartFormat, ChartError> {
        let Some(extension) = path.extension() else {
            return Err(ChartError::MissingExtension {
                path: path.to_path_buf(),
            });
        };
        let extension = extension.to_string_lossy();
        if extension.eq_ignore_ascii_case("png") {
            Ok(ChartFormat::Png)
        } else if extension.eq_ignore_ascii_case("svg") {
            Ok(ChartFormat::Svg)
        } else {
            Err(ChartError::UnsupportedExtension {
                path: path.to_path_buf(),
                extension: extension.into_owned(),
            })
        }
    }

    /// The MIME type of the rendered bytes.
    pub fn content_type(&self) -> &'static str {
        match self {
            ChartFormat::Png => "image/png",
            ChartFormat::Svg => "image/svg+xml",
        }
    }
}

/// Why a chart could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error(
        "cannot write a chart to {}: unsupported extension \".{extension}\" (use .png or .svg)",
        path.display()
    )]
    UnsupportedExtension { path: PathBuf, extension: String },
    #[error(
        "cannot write a chart to {}: the file name has no extension (use .png or .svg)",
        path.display()
    )]
    MissingExtension { path: PathBuf },
    #[error("no settled days in the range")]
    NoData,
    #[error(
        "chart size {width}x{height} px is not supported: the width must be between \
         {MIN_WIDTH_PX} and {MAX_SIDE_PX} px and the height between {MIN_HEIGHT_PX} and \
         {MAX_SIDE_PX} px"
    )]
    InvalidSize { width: u32, height: u32 },
    #[error(
        "chart height {height} px is too small for {panels} currency panels \
         (at least {MIN_PANEL_HEIGHT_PX} px per panel)"
    )]
    TooManyPanels { height: u32, panels: usize },
    #[error("{amount} {currency} is too large to chart")]
    AmountTooLarge { currency: Currency, amount: Money },
    #[error("the embedded chart font could not be loaded")]
    Font,
    #[error("drawing the chart failed: {0}")]
    Draw(String),
    #[error("encoding the chart as PNG failed: {0}")]
    Encode(#[source] image::ImageError),
}

/// Registers the embedded font with plotters, once per process.
fn ensure_font() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(ChartError::Font)
    }
}

/// Renders the daily gross, fees and net of `points` as one panel per currency (sorted by
/// currency code, stacked vertically) and returns the bytes of a PNG or SVG document.
pub fn render_daily_chart(
    points: &[DailyPoint],
    format: ChartFormat,
    width_px: u32,
    height_px: u32,
) -> Result<Vec<u8>, ChartError> {
    let plan = ChartPlan::new(points, width_px, height_px)?;
    render(&plan, format, width_px, height_px)
}

/// Refuses a chart size outside what the charts can draw.
pub(crate) fn check_size(width_px: u32, height_px: u32) -> Result<(), ChartError> {
    if (MIN_WIDTH_PX..=MAX_SIDE_PX).contains(&width_px)
        && (MIN_HEIGHT_PX..=MAX_SIDE_PX).contains(&height_px)
    {
        Ok(())
    } else {
        Err(ChartError::InvalidSize {
            width: width_px,
            height: height_px,
        })
    }
}

/// A chart that can draw itself on any plotters backend.
pub(crate) trait Drawing {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), ChartError>;
}

/// Draws `chart` on a `width_px` × `height_px` area of the backend of `format` and returns the
/// document's bytes: PNG encoded from an RGB buffer, or SVG text. Registers the font first.
pub(crate) fn render(
    chart: &impl Drawing,
    format: ChartFormat,
    width_px: u32,
    height_px: u32,
) -> Result<Vec<u8>, ChartError> {
    ensure_font()?;
    match format {
        ChartFormat::Png => {
            let pixels = u64::from(width_px) * u64::from(height_px) * 3;
            let mut rgb = vec![0_u8; usize::try_from(pixels).unwrap_or(usize::MAX)];
            {
                let root =
                    BitMapBackend::with_buffer(&mut rgb, (width_px, height_px)).into_drawing_area();
                chart.draw(&root)?;
                root.present().map_err(draw_error)?;
            }
            let mut png = Vec::new();
            image::ImageEncoder::write_image(
                image::codecs::png::PngEncoder::new(&mut png),
                &rgb,
                width_px,
                height_px,
                image::ExtendedColorType::Rgb8,
            )
            .map_err(ChartError::Encode)?;
            Ok(png)
        }
        ChartFormat::Svg => {
            let mut svg = String::new();
            {
                let root =
                    SVGBackend::with_string(&mut svg, (width_px, height_px)).into_drawing_area();
                chart.draw(&root)?;
                root.present().map_err(draw_error)?;
            }
            Ok(svg.into_bytes())
        }
    }
}

pub(crate) fn draw_error(error: impl std::fmt::Display) -> ChartError {
    ChartError::Draw(error.to_string())
}

/// Everything needed to draw, checked before any drawing starts.
struct ChartPlan<'a> {
    first_date: NaiveDate,
    /// Days from `first_date` to the last settled day.
    span_days: i64,
    /// Day indexes (days since `first_date`) spanned by the x axis: the settled days with a
    /// little padding either side, so a single day is never a zero-width axis.
    x_range: Range<i64>,
    x_label_count: usize,
    /// Per currency, sorted by code: the currency and its points sorted by date.
    panels: Vec<(Currency, Vec<&'a DailyPoint>)>,
}

impl<'a> ChartPlan<'a> {
    fn new(points: &'a [DailyPoint], width_px: u32, height_px: u32) -> Result<Self, ChartError> {
        check_size(width_px, height_px)?;
        let (Some(first_date), Some(last_date)) = (
            points.iter().map(|p| p.settlement_date).min(),
            points.iter().map(|p| p.settlement_date).max(),
        ) else {
            return Err(ChartError::NoData);
        };
        for point in points {
            for minor in [point.gross_minor, point.fees_minor, point.net_minor] {
                if minor.unsigned_abs() > MAX_CHART_MAGNITUDE.unsigned_abs() {
                    return Err(ChartError::AmountTooLarge {
                        currency: point.currency,
                        amount: Money::new(minor, point.currency),
                    });
                }
            }
        }

        let mut by_code: BTreeMap<&'static str, (Currency, Vec<&DailyPoint>)> = BTreeMap::new();
        for point in points {
            by_code
                .entry(point.currency.code())
                .or_insert_with(|| (point.currency, Vec::new()))
                .1
                .push(point);
        }
        let mut panels: Vec<_> = by_code.into_values().collect();
        for (_, series) in &mut panels {
            series.sort_by_key(|p| p.settlement_date);
        }
        let panel_count = u32::try_from(panels.len()).unwrap_or(u32::MAX);
        if height_px / panel_count < MIN_PANEL_HEIGHT_PX {
            return Err(ChartError::TooManyPanels {
                height: height_px,
                panels: panels.len(),
            });
        }

        let span_days = (last_date - first_date).num_days();
        let padding_days = (span_days / 20).max(1);
        // A YYYY-MM-DD label needs roughly 110 px at the label font size.
        let x_label_count = usize::try_from((width_px - LEGEND_WIDTH_PX) / 110)
            .unwrap_or(usize::MAX)
            .max(2);
        Ok(ChartPlan {
            first_date,
            span_days,
            x_range: -padding_days..span_days + padding_days,
            x_label_count,
            panels,
        })
    }

    fn day_index(&self, date: NaiveDate) -> i64 {
        (date - self.first_date).num_days()
    }

    /// The date of a day index, blank in the padding outside the settled days.
    fn date_label(&self, index: i64) -> String {
        if !(0..=self.span_days).contains(&index) {
            return String::new();
        }
        TimeDelta::try_days(index)
            .and_then(|delta| self.first_date.checked_add_signed(delta))
            .map(|date| date.format("%Y-%m-%d").to_string())
            .unwrap_or_default()
    }

    fn draw_panels<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), ChartError> {
        root.fill(&WHITE).map_err(draw_error)?;
        let areas = root.split_evenly((self.panels.len(), 1));
        for (area, (currency, series)) in areas.iter().zip(&self.panels) {
            self.draw_panel(area, *currency, series)?;
        }
        Ok(())
    }

    fn draw_panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        currency: Currency,
        series: &[&DailyPoint],
    ) -> Result<(), ChartError> {
        let y_range = y_range(series, currency);
        let y_label = |minor: &i64| Money::new(*minor, currency).to_string();
        let x_label = |index: &i64| self.date_label(*index);
        // Wide enough for the longest amount label at the label font size.
        let longest_y_label = y_label(&y_range.start)
            .len()
            .max(y_label(&y_range.end).len());
        let y_label_area = u32::try_from(longest_y_label).unwrap_or(32).min(32) * 8 + 16;

        let (width, height) = area.dim_in_pixel();
        let (plot_area, legend_area) = area.split_horizontally(width - LEGEND_WIDTH_PX);
        // A panel title is roughly 17 times its font size wide.
        let title_px = ((width - LEGEND_WIDTH_PX) / 18).clamp(10, TITLE_FONT_PX);
        // Roughly one amount label per 40 px of panel height.
        let y_label_count = usize::try_from(height / 40).unwrap_or(6).clamp(3, 6);
        // Markers make a single day visible, but would smear a dense series into a ribbon.
        let draw_markers = series.len() <= usize::try_from(width / 12).unwrap_or(usize::MAX);
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(
                format!("{} — daily gross, fees and net", currency.code()),
                (FONT_FAMILY, title_px),
            )
            .margin(8)
            .margin_right(24)
            .x_label_area_size(28)
            .y_label_area_size(y_label_area)
            .build_cartesian_2d(self.x_range.clone(), y_range)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_labels(self.x_label_count)
            .y_labels(y_label_count)
            .max_light_lines(4)
            .x_label_formatter(&x_label)
            .y_label_formatter(&y_label)
            .label_style((FONT_FAMILY, LABEL_FONT_PX))
            .draw()
            .map_err(draw_error)?;

        let legend_style = TextStyle::from((FONT_FAMILY, LABEL_FONT_PX).into_font())
            .pos(Pos::new(HPos::Left, VPos::Center));
        for (row, (name, color, amount)) in (0_i32..).zip(SERIES) {
            let coords: Vec<(i64, i64)> = series
                .iter()
                .map(|p| (self.day_index(p.settlement_date), amount(p)))
                .collect();
            chart
                .draw_series(LineSeries::new(
                    coords.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(draw_error)?;
            if draw_markers {
                chart
                    .draw_series(coords.iter().map(|&c| Circle::new(c, 3, color.filled())))
                    .map_err(draw_error)?;
            }
            // The legend entry, beside the plot so it never hides a line.
            let y = 40 + row * 18;
            legend_area
                .draw(&PathElement::new([(4, y), (24, y)], color.stroke_width(2)))
                .map_err(draw_error)?;
            legend_area
                .draw(&Text::new(name, (30, y), legend_style.clone()))
                .map_err(draw_error)?;
        }
        Ok(())
    }
}

impl Drawing for ChartPlan<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), ChartError> {
        self.draw_panels(root)
    }
}

/// The y axis of one panel, in minor units: always includes zero and every amount, with about
/// a tenth of headroom (at least one major unit) so lines do not sit on the frame and an
/// all-zero panel still has a non-empty range.
fn y_range(series: &[&DailyPoint], currency: Currency) -> Range<i64> {
    let amounts = series
        .iter()
        .flat_map(|p| [p.gross_minor, p.fees_minor, p.net_minor]);
    let low = amounts.clone().min().unwrap_or(0).min(0);
    let high = amounts.max().unwrap_or(0).max(0);
    // Amounts are bounded by MAX_CHART_MAGNITUDE, so this arithmetic cannot overflow.
    let one_major = 10_i64.pow(currency.exponent());
    let headroom = ((high - low) / 10).max(one_major);
    let start = if low < 0 { low - headroom } else { 0 };
    start..high + headroom
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::from_code("USD").unwrap()
    }

    fn date(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 3, day).unwrap()
    }

    fn point(day: u32, currency: Currency, gross: i64, fees: i64, net: i64) -> DailyPoint {
        DailyPoint {
            settlement_date: date(day),
            currency,
            gross_minor: gross,
            fees_minor: fees,
            net_minor: net,
        }
    }

    fn sample() -> Vec<DailyPoint> {
        let sar = Currency::from_code("SAR").unwrap();
        let kwd = Currency::from_code("KWD").unwrap();
        vec![
            point(1, usd(), 100_000, 2_500, 97_500),
            point(2, usd(), 123_456, 3_000, 120_456),
            point(3, usd(), 50_000, 1_250, 48_750),
            point(1, sar, 400_000, 9_000, 391_000),
            point(3, sar, 250_000, 6_000, 244_000),
            point(2, kwd, 12_345, 100, 12_245),
        ]
    }

    fn svg_text(points: &[DailyPoint]) -> String {
        let bytes = render_daily_chart(points, ChartFormat::Svg, 900, 900).unwrap();
        String::from_utf8(bytes).unwrap()
    }

    /// The contents of every `<text ...>...</text>` element.
    fn text_elements(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|rest| {
                let body = &rest[rest.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_string())
            })
            .collect()
    }

    /// True if `text` is a decimal amount with exactly `decimals` digits after the point.
    fn is_amount(text: &str, decimals: usize) -> bool {
        let unsigned = text.trim().strip_prefix('-').unwrap_or(text.trim());
        match unsigned.split_once('.') {
            Some((integer, fraction)) => {
                !integer.is_empty()
                    && integer.bytes().all(|b| b.is_ascii_digit())
                    && fraction.len() == decimals
                    && fraction.bytes().all(|b| b.is_ascii_digit())
            }
            None => false,
        }
    }

    #[test]
    fn png_has_signature_requested_size_and_drawn_content() {
        let bytes = render_daily_chart(&sample(), ChartFormat::Png, 640, 720).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
        let image = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!((image.width(), image.height()), (640, 720));
        let colours: std::collections::HashSet<[u8; 3]> = image.pixels().map(|p| p.0).collect();
        assert!(
            colours.len() > 3,
            "only {} distinct colours: nothing was drawn",
            colours.len()
        );
        // Each series colour appears, so the lines themselves were drawn.
        for colour in [GROSS_COLOR, FEES_COLOR, NET_COLOR] {
            let rgb = [colour.0, colour.1, colour.2];
            assert!(colours.contains(&rgb), "series colour {rgb:?} missing");
        }
    }

    #[test]
    fn svg_names_each_currency_and_labels_amounts_in_major_units() {
        let svg = svg_text(&sample());
        assert!(svg.contains("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        let texts = text_elements(&svg);
        for title in [
            "KWD — daily gross, fees and net",
            "SAR — daily gross, fees and net",
            "USD — daily gross, fees and net",
        ] {
            assert!(texts.iter().any(|t| t == title), "no title {title:?}");
        }
        // USD and SAR labels have two decimals, KWD labels three: each panel's own exponent.
        assert!(texts.iter().filter(|t| is_amount(t, 2)).count() >= 4);
        assert!(texts.iter().any(|t| is_amount(t, 3)));
        // Date labels and the legend.
        assert!(texts.iter().any(|t| t == "2024-03-02"));
        for name in ["gross", "fees", "net"] {
            assert!(texts.iter().any(|t| t == name), "no legend entry {name:?}");
        }
    }

    #[test]
    fn panels_are_stacked_in_currency_code_order() {
        let svg = svg_text(&sample());
        let position = |code: &str| svg.find(&format!("{code} — daily")).unwrap();
        assert!(position("KWD") < position("SAR"));
        assert!(position("SAR") < position("USD"));
    }

    #[test]
    fn y_labels_format_minor_units_as_major_amounts() {
        // A panel whose axis tops out near 1234.56 USD labels in dollars, not cents.
        let svg = svg_text(&[point(1, usd(), 123_456, 0, 123_456)]);
        let texts = text_elements(&svg);
        let amounts: Vec<&String> = texts.iter().filter(|t| is_amount(t, 2)).collect();
        assert!(amounts.iter().any(|t| t.as_str() == "0.00"), "{amounts:?}");
        assert!(
            amounts
                .iter()
                .any(|t| t.starts_with("1") && t.len() == "1000.00".len()),
            "no label in the thousands of dollars: {amounts:?}"
        );
        assert!(!texts.iter().any(|t| t == "123456" || t == "100000"));
    }

    #[test]
    fn empty_input_is_refused() {
        for format in [ChartFormat::Png, ChartFormat::Svg] {
            let err = render_daily_chart(&[], format, 800, 600).unwrap_err();
            assert!(matches!(err, ChartError::NoData));
            assert_eq!(err.to_string(), "no settled days in the range");
        }
    }

    #[test]
    fn format_comes_from_the_extension() {
        assert_eq!(
            ChartFormat::from_path(Path::new("x.PNG")).unwrap(),
            ChartFormat::Png
        );
        assert_eq!(
            ChartFormat::from_path(Path::new("out/x.svg")).unwrap(),
            ChartFormat::Svg
        );
        let err = ChartFormat::from_path(Path::new("x.jpg")).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("x.jpg"), "{message}");
        assert!(message.contains(".jpg\""), "{message}");
        let err = ChartFormat::from_path(Path::new("chart")).unwrap_err();
        assert!(err.to_string().contains("chart"), "{err}");
        assert_eq!(ChartFormat::Png.content_type(), "image/png");
        assert_eq!(ChartFormat::Svg.content_type(), "image/svg+xml");
    }

    #[test]
    fn negative_net_renders() {
        let points = [
            point(1, usd(), 1_000, 2_500, -1_500),
            point(2, usd(), 0, 300, -300),
        ];
        let svg = svg_text(&points);
        assert!(text_elements(&svg)
            .iter()
            .any(|t| t.starts_with('-') && is_amount(t, 2)));
        render_daily_chart(&points, ChartFormat::Png, 800, 400).unwrap();
    }

    #[test]
    fn single_day_and_all_zero_render() {
        let single = [point(5, usd(), 10_000, 250, 9_750)];
        let svg = svg_text(&single);
        assert!(text_elements(&svg).iter().any(|t| t == "2024-03-05"));
        render_daily_chart(&single, ChartFormat::Png, 800, 400).unwrap();
        let zero = [point(5, usd(), 0, 0, 0)];
        render_daily_chart(&zero, ChartFormat::Png, 800, 400).unwrap();
        render_daily_chart(&zero, ChartFormat::Svg, 800, 400).unwrap();
    }

    #[test]
    fn y_range_includes_zero_and_has_headroom() {
        let p = point(1, usd(), 1_000, 50, -200);
        assert_eq!(y_range(&[&p], usd()), -320..1_120);
        let z = point(1, usd(), 0, 0, 0);
        assert_eq!(y_range(&[&z], usd()), 0..100);
    }

    #[test]
    fn unusable_sizes_and_amounts_are_refused() {
        let points = sample();
        assert!(matches!(
            render_daily_chart(&points, ChartFormat::Png, 0, 600),
            Err(ChartError::InvalidSize { .. })
        ));
        assert!(matches!(
            render_daily_chart(&points, ChartFormat::Svg, 800, 100),
            Err(ChartError::TooManyPanels { panels: 3, .. })
        ));
        let huge = [point(1, usd(), i64::MAX, 0, i64::MAX)];
        assert!(matches!(
            render_daily_chart(&huge, ChartFormat::Png, 800, 600),
            Err(ChartError::AmountTooLarge { .. })
        ));
    }

    #[test]
    fn every_known_currency_fits_at_the_minimum_panel_height() {
        let points: Vec<DailyPoint> = Currency::all()
            .iter()
            .map(|&c| point(1, c, 1_000, 10, 990))
            .collect();
        let height = MIN_PANEL_HEIGHT_PX * u32::try_from(points.len()).unwrap();
        render_daily_chart(&points, ChartFormat::Png, MIN_WIDTH_PX, height).unwrap();
        render_daily_chart(&points, ChartFormat::Svg, MIN_WIDTH_PX, height).unwrap();
    }
}
