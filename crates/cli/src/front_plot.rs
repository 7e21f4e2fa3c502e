//! front.svg: every individual of `--strategy es`'s search by cost and validation accuracy,
//! coloured by generation, the front joined by a line, the three picks marked and named.

use anyhow::{anyhow, Result};
use pare_prune::{Front, Objective};
use plotters::prelude::*;

/// Lightest to darkest as generations go by: early ones pale blue, the last dark red.
fn generation_colour(generation: usize, generations: usize) -> HSLColor {
    let t = if generations > 1 {
        (generation - 1) as f64 / (generations - 1) as f64
    } else {
        1.0
    };
    HSLColor(0.62 * (1.0 - t), 0.75, 0.65 - 0.3 * t)
}

/// The individuals to mark, each with the names of its roles ("heavy, knee"; "output" for the
/// model written when it is none of the three).
fn marked(front: &Front) -> Vec<(usize, String)> {
    let mut marks: Vec<(usize, String)> = Vec::new();
    let roles = front.picks.iter().map(|p| (p.individual, p.role.name()));
    for (individual, name) in roles.chain([(front.output, "output")]) {
        match marks.iter_mut().find(|(i, _)| *i == individual) {
            Some(_) if name == "output" => {}
            Some((_, names)) => *names = format!("{names}, {name}"),
            None => marks.push((individual, name.to_string())),
        }
    }
    marks
}

/// The plot as an SVG document.
pub fn render(front: &Front) -> Result<String> {
    let point = |i: usize| {
        let ind = &front.individuals[i];
        (100.0 * ind.cost, 100.0 * (1.0 - ind.error))
    };
    let points: Vec<(f64, f64)> = (0..front.individuals.len()).map(point).collect();
    let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(_, accuracy) in &points {
        (low, high) = (low.min(accuracy), high.max(accuracy));
    }
    if points.is_empty() {
        (low, high) = (0.0, 100.0);
    }
    let pad = ((high - low) * 0.1).max(0.5);
    let y_range = (low - pad).max(0.0)..(high + pad).min(100.0);
    let generations = front
        .individuals
        .iter()
        .map(|i| i.generation)
        .max()
        .unwrap_or(1);
    let measure = match front.objective {
        Objective::Macs => "MACs",
        Objective::Params => "parameters",
        Objective::Latency => "predicted latency",
    };
    let mut on_front: Vec<(f64, f64)> = (0..points.len())
        .filter(|&i| front.individuals[i].on_front)
        .map(point)
        .collect();
    on_front.sort_by(|a, b| a.0.total_cmp(&b.0));

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 560)).into_drawing_area();
        let plot = |e| anyhow!("drawing front.svg: {e}");
        root.fill(&WHITE).map_err(plot)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "Search: {} individuals, {generations} generations",
                    points.len()
                ),
                ("sans-serif", 20),
            )
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..105.0, y_range)
            .map_err(plot)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc(format!("{measure} (% of the original)"))
            .y_desc("validation accuracy after the short fine-tune (%)")
            .draw()
            .map_err(plot)?;
        for generation in 1..=generations {
            let colour = generation_colour(generation, generations);
            let members =
                (0..points.len()).filter(|&i| front.individuals[i].generation == generation);
            chart
                .draw_series(members.map(|i| Circle::new(points[i], 3, colour.filled())))
                .map_err(plot)?
                .label(format!("generation {generation}"))
                .legend(move |(x, y)| Circle::new((x, y), 3, colour.filled()));
        }
        chart
            .draw_series(LineSeries::new(on_front, BLACK.stroke_width(1)))
            .map_err(plot)?
            .label("front")
            .legend(|(x, y)| PathElement::new(vec![(x - 8, y), (x + 8, y)], BLACK));
        for (individual, names) in marked(front) {
            let at = point(individual);
            chart
                .draw_series([TriangleMarker::new(at, 7, BLACK.filled())])
                .map_err(plot)?;
            chart
                .draw_series([Text::new(names, (at.0 + 1.0, at.1), ("sans-serif", 14))])
                .map_err(plot)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot)?;
        root.present().map_err(plot)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pare_prune::{Cost, FrontIndividual, Pick, Role};

    fn front(picks: [usize; 3], output: usize) -> Front {
        let individual = |generation: usize, cost: f64| FrontIndividual {
            generation,
            kept: vec![3],
            error: 0.1 / cost,
            cost,
            macs: (1000.0 * cost) as u64,
            params: 10,
            on_front: true,
            repeat: false,
        };
        let cost = Cost {
            params: 10,
            macs: 1000,
        };
        Front {
            objective: Objective::Macs,
            original: cost,
            original_validation_accuracy: 97.0,
            groups: Vec::new(),
            individuals: vec![individual(1, 0.9), individual(1, 0.6), individual(2, 0.3)],
            picks: Role::ALL
                .iter()
                .zip(picks)
                .map(|(&role, individual)| Pick {
                    role,
                    individual,
                    cost,
                    validation_accuracy: 97.0,
                    graph: pare_ir::Graph::default(),
                })
                .collect(),
            output,
        }
    }

    #[test]
    fn picks_on_one_individual_share_a_label_and_a_separate_output_gets_its_own() {
        let marks = marked(&front([0, 0, 2], 1));
        let expected = [(0, "heavy, knee"), (2, "light"), (1, "output")];
        assert_eq!(marks, expected.map(|(i, n)| (i, n.to_string())));
        // The output written is the knee: no extra mark.
        assert_eq!(marked(&front([0, 1, 2], 1)).len(), 3);
    }

    #[test]
    fn the_plot_is_one_svg_document_with_a_point_per_individual() {
        let svg = render(&front([0, 1, 2], 1)).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Three individuals and a legend entry for each of the two generations.
        assert_eq!(svg.matches("<circle").count(), 3 + 2);
        assert_eq!(svg.matches("<polygon").count(), 3, "a triangle per pick");
    }
}
