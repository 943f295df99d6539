//! Printing results: aligned tables for people, JSON (`-o json`) for scripts.

use serde::Serialize;

use crate::{CliError, Format};

/// Prints `value` as JSON, or as a table of `rows` under `headers`.
pub fn print<T: Serialize>(
    format: Format,
    value: &T,
    headers: &[&str],
    rows: Vec<Vec<String>>,
) -> Result<(), CliError> {
    match format {
        Format::Json => {
            let s =
                serde_json::to_string_pretty(value).map_err(|e| CliError::usage(e.to_string()))?;
            println!("{s}");
        }
        Format::Table => print!("{}", table(headers, &rows)),
    }
    Ok(())
}

pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

pub fn t(v: time::OffsetDateTime) -> String {
    model::types::format_time(v)
}

pub fn opt_t(v: Option<time::OffsetDateTime>) -> String {
    v.map(t).unwrap_or_else(|| "-".into())
}
