//! The plain-text log line for files and pipes: `TIME  LEVEL target: message key=value ...`,
//! the layout of tracing-subscriber's default format without its colours.
//!
//! The API and the edge write a line per request, and the default formatter spent as much
//! CPU on a line as routing, authorizing and answering the request (styling every part
//! even with colours off, and formatting the date field by field). This one writes the
//! date from a per-thread cache of the current second and the fields as tracing records
//! them. On a terminal the default (coloured) format is used instead. It must never drop
//! or rename a field: scripts and tests read these lines.

use std::cell::RefCell;
use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as `2026-11-26T13:00:00.123456Z  INFO api::server: message k=v`.
pub struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write_time(&mut w, time::OffsetDateTime::now_utc())?;
        let meta = event.metadata();
        write!(w, " {:>5} {}: ", meta.level(), meta.target())?;
        let mut v = Fields {
            w: &mut w,
            result: Ok(()),
            first: true,
        };
        event.record(&mut v);
        v.result?;
        w.write_char('\n')
    }
}

/// Writes RFC 3339 UTC time with microseconds; the part up to the second is formatted once
/// per second per thread.
fn write_time(w: &mut impl fmt::Write, now: time::OffsetDateTime) -> fmt::Result {
    thread_local! {
        static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let unix = now.unix_timestamp();
    SECOND.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != unix {
            c.1.clear();
            let _ = write!(
                c.1,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                now.year(),
                now.month() as u8,
                now.day(),
                now.hour(),
                now.minute(),
                now.second()
            );
            c.0 = unix;
        }
        write!(w, "{}.{:06}Z", c.1, now.microsecond())
    })
}

/// Writes the message, then every other field as ` name=value` (strings quoted, `%` and
/// `?` values as their `Display` and `Debug`), as the default format does.
struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
    first: bool,
}

impl Fields<'_, '_> {
    fn sep(&mut self) -> fmt::Result {
        if self.first {
            self.first = false;
            Ok(())
        } else {
            self.w.write_char(' ')
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        self.result = self.sep().and_then(|()| {
            if name == "message" {
                write!(self.w, "{value:?}")
            } else {
                let name = name.strip_prefix("r#").unwrap_or(name);
                write!(self.w, "{name}={value:?}")
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::tests::Captured;

    /// The line has the default format's layout: what follows the time is the same.
    #[test]
    fn the_line_matches_the_default_layout_after_the_time() {
        let emit = || {
            let peer: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
            tracing::info!(
                request_id = %"r-1",
                method = "GET",
                status = 200u16,
                duration_ms = 1.5f64,
                ok = true,
                source = %peer,
                detail = ?Some("x"),
                "api request"
            );
            tracing::warn!(r#type = 3, "second {}", 2);
        };
        let plain = Captured::default();
        let default = Captured::default();
        for (w, fast) in [(plain.clone(), true), (default.clone(), false)] {
            let builder = tracing_subscriber::fmt().with_ansi(false).with_writer(w);
            if fast {
                tracing::subscriber::with_default(builder.event_format(Plain).finish(), emit);
            } else {
                tracing::subscriber::with_default(builder.finish(), emit);
            }
        }
        let text = |c: &Captured| String::from_utf8(c.0.lock().unwrap().clone()).unwrap();
        let (plain, default) = (text(&plain), text(&default));
        let tails = |t: &str| -> Vec<String> {
            t.lines()
                .map(|l| l.split_once('Z').expect("a time").1.to_string())
                .collect()
        };
        assert_eq!(tails(&plain), tails(&default), "{plain}\n{default}");
        assert_eq!(plain.lines().count(), 2);
    }

    #[test]
    fn the_time_is_rfc3339_with_microseconds() {
        let mut s = String::new();
        let t = time::macros::datetime!(2026-11-26 13:05:09.123456 UTC);
        write_time(&mut s, t).unwrap();
        s.push(' ');
        write_time(&mut s, t + time::Duration::seconds(61)).unwrap();
        assert_eq!(s, "2026-11-26T13:05:09.123456Z 2026-11-26T13:06:10.123456Z");
    }
}
