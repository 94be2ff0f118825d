//! `report.html`: one self-contained page (inline style and SVG, no script,
//! font or image from anywhere) with the summary's figures as charts a person
//! reads at a glance. The summary itself is embedded as JSON, so that tools
//! and tests read the same figures the page shows.

use std::fmt::Write;

use super::Facts;
use super::clusters::Member;
use super::summary::{RunState, Summary};
use crate::clock::iso_ms;
use crate::progress::thousands;

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI','PingFang SC','Microsoft YaHei',sans-serif;margin:0;color:#1d2430;background:#f5f6f8}
main{max-width:1080px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:0 0 12px}
.sub{color:#5b6472;margin-bottom:16px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:16px}
.card{background:#fff;border-radius:8px;padding:16px;box-shadow:0 1px 2px rgba(0,0,0,.08);break-inside:avoid}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:12px;margin:16px 0}
.kpi{background:#fff;border-radius:8px;padding:12px 14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.kpi b{display:block;font-size:22px}.kpi span{color:#5b6472;font-size:12px}
.state{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600}
.complete{background:#2e7d32}.paused{background:#ef6c00}.failed{background:#c62828}
.next{margin:12px 0;padding:12px 14px;border-left:4px solid #ef6c00;background:#fff8ef}
.error{border-left-color:#c62828;background:#fdeeee;white-space:pre-wrap}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:4px 6px;border-bottom:1px solid #eceef1}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
summary{cursor:pointer}code{font-size:12px;word-break:break-all}
details.cluster{border-bottom:1px solid #eceef1;padding:6px 0}details.cluster summary .n{float:right;color:#5b6472}
details.cluster .field{display:inline-block;min-width:80px;font-weight:600}details.cluster table{margin:6px 0 6px 16px;width:auto;min-width:50%}
svg text{font-size:12px;fill:#1d2430}
@media print{body{background:#fff}.card,.kpi{box-shadow:none;border:1px solid #ddd}}
";

const LEVEL_COLOURS: [&str; 5] = ["#66bb6a", "#ffca28", "#ffa726", "#e53935", "#8e24aa"];

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Horizontal bars, one per (label, value, colour).
fn bars(id: &str, items: &[(String, u64, &str)]) -> String {
    if items.is_empty() {
        return "<p class=\"sub\">none</p>".into();
    }
    let max = items.iter().map(|i| i.1).max().unwrap_or(0).max(1);
    let row = 26;
    let height = row * items.len() + 4;
    let mut svg = format!(
        "<svg class=\"chart\" id=\"{id}\" viewBox=\"0 0 320 {height}\" width=\"100%\" role=\"img\">"
    );
    for (i, (name, value, colour)) in items.iter().enumerate() {
        let y = i * row + 2;
        let width = (*value as f64 / max as f64 * 150.0).max(if *value > 0 { 2.0 } else { 0.0 });
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\">{}</text><rect class=\"bar\" x=\"110\" y=\"{y}\" width=\"{width:.1}\" height=\"18\" rx=\"3\" fill=\"{colour}\"><title>{}: {}</title></rect><text x=\"{:.1}\" y=\"{}\">{}</text>",
            y + 14,
            escape(name),
            escape(name),
            value,
            116.0 + width,
            y + 14,
            thousands(*value)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The width of a throughput bucket: seconds for a short run, minutes, or
/// hours, so that the chart has at most a few hundred bars.
fn bucket_for(span_ms: i64) -> (i64, &'static str) {
    match span_ms {
        s if s <= 5 * 60_000 => (1_000, "second"),
        s if s <= 10 * 3_600_000 => (60_000, "minute"),
        _ => (3_600_000, "hour"),
    }
}

/// Rows finished per second, minute or hour over the run, across invocations.
fn throughput(chunk_times: &[(i64, u64)]) -> (String, &'static str) {
    let (Some(first), Some(last)) = (chunk_times.first(), chunk_times.last()) else {
        return (
            "<p class=\"sub\">no chunk finished yet</p>".into(),
            "minute",
        );
    };
    let (bucket, unit) = bucket_for(last.0 - first.0);
    let start = first.0 / bucket;
    let buckets = ((last.0 / bucket - start) as usize + 1).min(600);
    let mut rows = vec![0u64; buckets];
    for (at, n) in chunk_times {
        let i = ((at / bucket - start) as usize).min(buckets - 1);
        rows[i] += n;
    }
    let max = rows.iter().copied().max().unwrap_or(0).max(1);
    let (w, h) = (320.0, 120.0);
    let step = w / buckets as f64;
    let mut svg = format!(
        "<svg class=\"chart\" id=\"throughput\" viewBox=\"0 0 {w} {}\" width=\"100%\" role=\"img\">",
        h + 20.0
    );
    for (i, n) in rows.iter().enumerate() {
        let bar = *n as f64 / max as f64 * h;
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bar:.1}\" fill=\"#42a5f5\"><title>{}: {} rows ({:.1}/s)</title></rect>",
            i as f64 * step,
            h - bar,
            (step * 0.85).max(0.5),
            iso_ms((start + i as i64) * bucket),
            n,
            *n as f64 * 1000.0 / bucket as f64
        );
    }
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"{}\">{}</text><text x=\"{w}\" y=\"{}\" text-anchor=\"end\">peak {}/{unit}</text></svg>",
        h + 16.0,
        escape(&iso_ms(start * bucket)[..16]),
        h + 16.0,
        thousands(max)
    );
    (svg, unit)
}

fn next_step(s: &Summary) -> Option<(String, &'static str)> {
    match s.state {
        RunState::Complete => None,
        RunState::Failed => Some((
            format!(
                "The run failed: {}",
                s.error.as_deref().unwrap_or("see the log")
            ),
            "next error",
        )),
        RunState::Paused => {
            let why = match s.pause_reason.map(|r| r.as_str()) {
                Some("daily_quota") => {
                    "WeChat's daily quota is used up (45009): run again tomorrow."
                }
                Some("insufficient_balance") => {
                    "The risk service balance is used up (code 13): top it up, then run again."
                }
                Some("interrupted") => "Stopped by a signal: run the same command again.",
                Some("max_chunks") | Some("deadline") => {
                    "This invocation's bound was reached: the next cron tick, or the same command, goes on."
                }
                _ => "Some rows ran out of retries: the next invocation tries them again.",
            };
            Some((why.to_string(), "next"))
        }
    }
}

fn kpi(out: &mut String, value: &str, name: &str) {
    let _ = write!(
        out,
        "<div class=\"kpi\"><b>{}</b><span>{}</span></div>",
        escape(value),
        escape(name)
    );
}

pub fn render(facts: &Facts) -> String {
    let s = &facts.summary;
    let mut page = String::with_capacity(16 * 1024);
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>riskbatch: {}</title><style>{STYLE}</style></head><body><main>",
        escape(&s.job)
    );
    let _ = write!(
        page,
        "<h1>{} <span class=\"state {}\" id=\"state\">{}</span></h1><div class=\"sub\">run <code>{}</code> · input <code>{}</code> · {} → {}</div>",
        escape(&s.job),
        s.state.as_str(),
        s.state.as_str(),
        escape(&s.run_id),
        escape(&s.input.path),
        escape(&s.run_started_at),
        escape(&s.finished_at)
    );
    if let Some((text, class)) = next_step(s) {
        let _ = write!(page, "<div class=\"{class}\">{}</div>", escape(&text));
    }
    page.push_str("<div class=\"kpis\">");
    kpi(
        &mut page,
        &format!("{} / {}", thousands(s.rows.done), thousands(s.rows.total)),
        "rows done",
    );
    kpi(&mut page, &thousands(s.rows.pending), "rows pending");
    if let Some(lines) = s.input.lines {
        kpi(&mut page, &thousands(lines), "physical lines read");
    }
    kpi(&mut page, &thousands(s.calls.sent), "calls sent");
    kpi(&mut page, &thousands(s.calls.retries), "retries");
    kpi(&mut page, &thousands(s.calls.cache_hits), "cache hits");
    kpi(&mut page, &thousands(s.calls.duplicates), "duplicates");
    kpi(&mut page, &thousands(s.calls.listed), "listed");
    if s.rows.this_invocation > 0 {
        kpi(
            &mut page,
            &format!("{:.0}/s", s.rows_per_second),
            "rows per second (this invocation)",
        );
    }
    if s.feedback.verdicts > 0 {
        kpi(
            &mut page,
            &thousands(s.feedback.verdicts),
            "verdicts pushed by WeChat",
        );
    }
    if let Some(price) = facts.price_per_call {
        kpi(
            &mut page,
            &format!("{:.2}", price * s.calls.sent as f64),
            "cost of the calls",
        );
    }
    page.push_str("</div>");
    if let Some(t) = &s.timing {
        timing(&mut page, t);
    }
    page.push_str("<div class=\"grid\">");
    let levels: Vec<(String, u64, &str)> = s
        .risk_levels
        .iter()
        .map(|(level, n)| {
            let i: usize = level.parse().unwrap_or(0);
            (
                format!("{level} {}", level_label(i as u8)),
                *n,
                LEVEL_COLOURS[i.min(4)],
            )
        })
        .collect();
    let statuses: Vec<(String, u64, &str)> = s
        .statuses
        .iter()
        .map(|(k, n)| (k.clone(), *n, if k == "ok" { "#66bb6a" } else { "#90a4ae" }))
        .chain((s.rows.pending > 0).then(|| ("pending".to_string(), s.rows.pending, "#cfd8dc")))
        .collect();
    let errcodes: Vec<(String, u64, &str)> = s
        .errcodes
        .iter()
        .map(|(k, n)| (k.clone(), *n, "#ef5350"))
        .collect();
    for (title, id, items) in [
        ("Rows by risk level", "levels", &levels),
        ("Rows by status", "statuses", &statuses),
        ("Rows by errcode", "errcodes", &errcodes),
    ] {
        let _ = write!(
            page,
            "<section class=\"card\"><h2>{title}</h2>{}</section>",
            bars(id, items)
        );
    }
    let (chart, unit) = throughput(&facts.chunk_times);
    let _ = write!(
        page,
        "<section class=\"card\"><h2>Rows finished per {unit}</h2>{chart}</section></div>"
    );
    clusters(&mut page, s, &facts.cluster_members);
    let data = serde_json::to_string(s)
        .unwrap_or_default()
        .replace("</", "<\\/");
    let _ = write!(
        page,
        "<script type=\"application/json\" id=\"riskbatch-summary\">{data}</script></main></body></html>"
    );
    page
}

fn clusters(page: &mut String, s: &Summary, members: &[Vec<Member>]) {
    page.push_str("<section class=\"card\" style=\"margin-top:16px\"><h2>Shared devices, IPs, phones and Wi-Fi networks (possible rings)</h2>");
    if s.clusters.is_empty() {
        page.push_str("<p class=\"sub\">No value is shared by enough rows (clusters are counted when the result files are written).</p></section>");
        return;
    }
    page.push_str("<p class=\"sub\">Open a cluster to see its rows.</p><div id=\"clusters\">");
    for (i, c) in s.clusters.iter().enumerate() {
        let _ = write!(
            page,
            "<details class=\"cluster\"{}><summary><span class=\"field\">{}</span> <code>{}</code> \
             <span class=\"n\">{} rows, {} high risk</span></summary>",
            if i == 0 { " open" } else { "" },
            escape(&c.field),
            escape(&c.value),
            thousands(c.rows),
            thousands(c.high_risk_rows)
        );
        let rows = members.get(i).map(Vec::as_slice).unwrap_or_default();
        cluster_rows(page, rows, c.rows);
        page.push_str("</details>");
    }
    page.push_str("</div></section>");
}

/// The table inside an opened cluster, with "N more" beyond the rows kept.
fn cluster_rows(page: &mut String, rows: &[Member], total: u64) {
    if rows.is_empty() {
        page.push_str(
            "<p class=\"sub\">The rows are listed when the result files are written.</p>",
        );
        return;
    }
    page.push_str("<table><tr><th class=\"n\">row</th><th>openid</th><th>risk level</th></tr>");
    for m in rows {
        let level = m
            .level
            .map_or("—".to_string(), |l| format!("{l} {}", level_label(l)));
        let _ = write!(
            page,
            "<tr><td class=\"n\">{}</td><td><code>{}</code></td><td>{level}</td></tr>",
            m.row,
            escape(&m.openid)
        );
    }
    page.push_str("</table>");
    let more = total.saturating_sub(rows.len() as u64);
    if more > 0 {
        let _ = write!(
            page,
            "<p class=\"sub more\">{} more rows: filter results.parquet or results.csv on this value to see them all.</p>",
            thousands(more)
        );
    }
}

/// The estimate of the run's first invocation against the time it took.
fn timing(page: &mut String, t: &super::summary::Timing) {
    let bound = match t.bound {
        crate::estimate::pace::Bound::Rate => "the rate".to_string(),
        crate::estimate::pace::Bound::Concurrency => format!(
            "concurrency ÷ {:.0} ms per request",
            t.pace.slot_seconds * 1000.0
        ),
    };
    let _ = write!(
        page,
        "<div class=\"card\" id=\"timing\" style=\"margin-bottom:16px\">Estimated time for the {} requests sent so far: \
         <b>{}</b> (bound by {bound}); they took <b>{}</b> of calling.</div>",
        thousands(t.requests),
        human_seconds(t.estimated_seconds),
        human_seconds(t.actual_seconds)
    );
}

fn human_seconds(seconds: f64) -> String {
    crate::duration::human(std::time::Duration::from_secs_f64(seconds.clamp(0.0, 1e9)))
}

fn level_label(level: u8) -> &'static str {
    match level {
        0 => "none",
        1 => "low",
        2 => "medium",
        3 => "high",
        _ => "very high",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_groups_digits() {
        assert_eq!(
            escape("<a href=\"x\">&"),
            "&lt;a href=&quot;x&quot;&gt;&amp;"
        );
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }

    #[test]
    fn throughput_buckets_rows_by_minute() {
        let (svg, unit) = throughput(&[(0, 1000), (30_000, 1000), (361_000, 500)]);
        assert_eq!(unit, "minute");
        assert!(
            svg.contains("2000 rows") && svg.contains("500 rows"),
            "{svg}"
        );
        let (svg, unit) = throughput(&[(0, 1000), (1_500, 1000)]);
        assert_eq!(unit, "second");
        assert!(svg.contains("1000 rows (1000.0/s)"), "{svg}");
    }
}
