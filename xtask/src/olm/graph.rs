//! The upgrade graph as SVG: one lane per channel, one column per release, and an edge for
//! every `replaces` (solid), `skips` (dotted) and `skipRange` (dashed) a Subscription in that
//! channel can take.

use std::fmt::Write;

use super::{plan::Plan, range::Range};

const LANE: i32 = 90;
const COLUMN: i32 = 170;
const LEFT: i32 = 130;
const TOP: i32 = 60;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The graph of `plan`.
pub fn svg(plan: &Plan) -> String {
    let width = LEFT + COLUMN * plan.releases.len() as i32 + 40;
    let height = TOP + LANE * plan.channels.len() as i32 + 50;
    let x = |i: usize| LEFT + COLUMN * i as i32 + COLUMN / 2;
    let y = |lane: usize| TOP + LANE * lane as i32 + LANE / 2;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">"##
    );
    out.push_str(r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>
"##);
    let _ = writeln!(
        out,
        r##"<text x="10" y="22" font-size="15" font-weight="bold">{} upgrade graph</text>"##,
        escape(&plan.package)
    );
    let _ = writeln!(
        out,
        r##"<text x="10" y="42" fill="#555">solid: replaces · dotted: skips · dashed: skipRange · default channel in bold</text>"##
    );
    for (lane, channel) in plan.channels.iter().enumerate() {
        let top = TOP + LANE * lane as i32;
        let fill = if lane % 2 == 0 { "#f3f5f8" } else { "#ffffff" };
        let _ = writeln!(
            out,
            r##"<rect x="0" y="{top}" width="{width}" height="{LANE}" fill="{fill}"/>"##
        );
        let weight = if *channel == plan.default_channel {
            "bold"
        } else {
            "normal"
        };
        let _ = writeln!(
            out,
            r##"<text x="10" y="{}" font-weight="{weight}">{}</text>"##,
            y(lane) + 5,
            escape(channel)
        );
        let members: Vec<usize> = plan
            .releases
            .iter()
            .enumerate()
            .filter(|(_, r)| r.channels.contains(channel))
            .map(|(i, _)| i)
            .collect();
        for &i in &members {
            let release = &plan.releases[i];
            let edge = |out: &mut String, from: usize, dash: &str, bend: i32| {
                let (x1, x2, yy) = (x(from) + 26, x(i) - 26, y(lane));
                let mid = (x1 + x2) / 2;
                let _ = writeln!(
                    out,
                    r##"<path d="M{x1},{yy} Q{mid},{} {x2},{yy}" fill="none" stroke="#333" stroke-width="1.5"{dash} marker-end="url(#arrow)"/>"##,
                    yy - bend
                );
            };
            let index = |v: &semver::Version| plan.releases.iter().position(|r| &r.version == v);
            if let Some(from) = release.replaces.as_ref().and_then(index)
                && members.contains(&from)
            {
                edge(&mut out, from, "", 0);
            }
            for from in release.skips.iter().filter_map(index) {
                if members.contains(&from) {
                    edge(&mut out, from, r##" stroke-dasharray="2,4""##, 56);
                }
            }
            let skip_range = release.skip_range_in(channel);
            if let Some(range) = skip_range.and_then(|r| Range::parse(r).ok()) {
                for &from in &members {
                    let replaced = release.replaces.as_ref().and_then(index) == Some(from);
                    if from < i && !replaced && range.contains(&plan.releases[from].version) {
                        edge(&mut out, from, r##" stroke-dasharray="7,4""##, 72);
                    }
                }
            }
            // Edges whose source is in no earlier column of this lane: say them in words.
            let mut outside = Vec::new();
            if let Some(replaced) = &release.replaces
                && !members.iter().any(|&m| &plan.releases[m].version == replaced)
            {
                outside.push(format!("replaces {replaced}"));
            }
            if let Some(range) = skip_range
                && !members.iter().any(|&m| m < i)
            {
                outside.push(format!("skipRange {range}"));
            }
            if !outside.is_empty() {
                let _ = writeln!(
                    out,
                    r##"<text x="{}" y="{}" fill="#555" font-size="11" text-anchor="end">{}</text>"##,
                    x(i) - 32,
                    y(lane) + 4,
                    escape(&outside.join(" · "))
                );
            }
            let fill = if release.released { "#1f3a5f" } else { "#6fa8dc" };
            let _ = writeln!(
                out,
                r##"<circle cx="{}" cy="{}" r="24" fill="{fill}"/><text x="{}" y="{}" fill="#fff" text-anchor="middle">{}</text>"##,
                x(i),
                y(lane),
                x(i),
                y(lane) + 5,
                release.version
            );
        }
    }
    let _ = writeln!(
        out,
        r##"<text x="10" y="{}" fill="#555">dark: released (frozen) · light: not yet released</text>"##,
        height - 15
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_nodes_and_edges_follow_the_plan() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut plan = Plan::load(root).unwrap();
        // The plan as it was up to 1.0.0: the counts below are of those releases.
        plan.releases
            .retain(|r| r.version <= semver::Version::new(1, 0, 0));
        let svg = svg(&plan);
        // 0.1.0 and 0.2.0 in two channels, 1.0.0 in four.
        assert_eq!(svg.matches("<circle").count(), 8);
        // replaces 0.1.0 -> 0.2.0 -> 1.0.0 in candidate and fast.
        assert_eq!(svg.matches(r#"stroke-width="1.5" marker-end"#).count(), 4);
        // skipRange 0.1.0 -> 1.0.0 in fast only: candidate upgrades one release at a time.
        assert_eq!(svg.matches(r#"stroke-dasharray="7,4""#).count(), 1);
        assert_eq!(
            svg.matches("replaces 0.2.0 · skipRange &gt;=0.1.0 &lt;1.0.0")
                .count(),
            2
        );
        assert!(svg.contains(r#"font-weight="bold">stable<"#));
    }
}
