//! The SVG chart: requests per second of each route relative to `plain`,
//! one bar per body size.

use std::io;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One route's bars: its label and, per body size, its ratio to `plain`.
#[derive(Debug, Clone)]
pub struct Group {
    /// The route.
    pub label: String,
    /// Ratio to plain at each body size, in the order of the sizes given
    /// to [`write_svg`].
    pub ratios: Vec<f64>,
}

/// Bar colours, one per body size.
const COLOURS: [RGBColor; 4] = [
    RGBColor(0x3b, 0x6e, 0xa8),
    RGBColor(0xe0, 0x8a, 0x2e),
    RGBColor(0x5a, 0xa0, 0x5a),
    RGBColor(0x9a, 0x5a, 0xa8),
];

/// Renders the chart as SVG text.
///
/// # Errors
///
/// When plotters fails to draw.
pub fn render(title: &str, sizes: &[&str], groups: &[Group], goal: f64) -> io::Result<String> {
    let mut svg = String::new();
    draw(&mut svg, title, sizes, groups, goal).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(svg)
}

/// Renders the chart into `path`, creating its directory.
///
/// # Errors
///
/// When drawing or writing fails.
pub fn write_svg(
    path: &Path,
    title: &str,
    sizes: &[&str],
    groups: &[Group],
    goal: f64,
) -> io::Result<()> {
    let svg = render(title, sizes, groups, goal)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, svg)
}

fn draw(
    svg: &mut String,
    title: &str,
    sizes: &[&str],
    groups: &[Group],
    goal: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let (width, height) = (880u32, 440u32);
    let root = SVGBackend::with_string(svg, (width, height)).into_drawing_area();
    root.fill(&WHITE)?;

    let highest = groups
        .iter()
        .flat_map(|g| g.ratios.iter().copied())
        .fold(1.0f64, f64::max);
    // Headroom above 1.0 for the value labels and the legend.
    let top = (highest * 1.15).max(1.3);
    let n = groups.len().max(1) as f64;

    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..n, 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(8)
        .y_desc("requests per second ÷ plain")
        .y_label_formatter(&|v| format!("{v:.1}"))
        .max_light_lines(0)
        .draw()?;

    // Bars: each group takes one unit of x, its bars share 80% of it.
    let bars = sizes.len().max(1) as f64;
    let slot = 0.8 / bars;
    for (s, size) in sizes.iter().enumerate() {
        let colour = COLOURS[s % COLOURS.len()];
        let rects = groups.iter().enumerate().filter_map(|(i, g)| {
            let value = *g.ratios.get(s)?;
            let x0 = i as f64 + 0.1 + s as f64 * slot;
            Some(Rectangle::new(
                [(x0 + slot * 0.06, 0.0), (x0 + slot * 0.94, value)],
                colour.filled(),
            ))
        });
        chart
            .draw_series(rects)?
            .label(*size)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled()));
        let values = groups.iter().enumerate().filter_map(|(i, g)| {
            let value = *g.ratios.get(s)?;
            let x = i as f64 + 0.1 + (s as f64 + 0.5) * slot;
            Some(Text::new(
                format!("{value:.2}"),
                (x, value + top * 0.01),
                ("sans-serif", 13)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            ))
        });
        chart.draw_series(values)?;
    }

    // Reference lines: plain itself, and the goal for a hit.
    let dashed = |y: f64, colour: RGBColor| {
        let steps = (n * 40.0) as usize;
        (0..steps).step_by(2).map(move |k| {
            let x0 = k as f64 / 40.0;
            PathElement::new(
                vec![(x0, y), ((k + 1) as f64 / 40.0, y)],
                colour.stroke_width(1),
            )
        })
    };
    chart.draw_series(dashed(1.0, BLACK))?;
    chart
        .draw_series(dashed(goal, RGBColor(0xc0, 0x30, 0x30)))?
        .label(format!("goal for a hit: {goal:.2}"))
        .legend(|(x, y)| {
            PathElement::new(
                vec![(x, y), (x + 14, y)],
                RGBColor(0xc0, 0x30, 0x30).stroke_width(2),
            )
        });

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 13))
        .draw()?;

    // Route names under their bars, placed in pixels.
    for (i, g) in groups.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        root.draw(&Text::new(
            g.label.clone(),
            (px, py + 10),
            ("sans-serif", 14)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bars_labels_and_legend() {
        let groups = vec![
            Group {
                label: "plain".into(),
                ratios: vec![1.0, 1.0],
            },
            Group {
                label: "ours".into(),
                ratios: vec![0.98, 0.95],
            },
        ];
        let svg = render("test", &["1 KiB", "64 KiB"], &groups, 0.97).unwrap();
        assert!(svg.starts_with("<svg"));
        for text in ["plain", "ours", "0.98", "0.95", "1 KiB", "64 KiB", "goal"] {
            assert!(svg.contains(text), "{text} missing");
        }
    }
}
