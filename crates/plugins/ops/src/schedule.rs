//! Scheduled backups: a five-field cron expression (`minute hour day month weekday`, UTC)
//! checked every second against the kernel clock; each matching minute's backup runs once
//! across the instances (its task has a fixed id, so the second instance's insert fails), and
//! scheduled backups beyond `ops.backup_keep` are deleted afterwards.

use std::sync::{Arc, Weak};
use std::time::Duration;

use nexus_kernel::principal::Principal;

use crate::Ops;

/// One field: the values it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field(Vec<bool>);

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minute: Field,
    hour: Field,
    day: Field,
    month: Field,
    weekday: Field,
    /// Whether day and weekday were both restricted (cron then takes either).
    either_day: bool,
}

fn field(text: &str, min: u32, max: u32, name: &str) -> Result<(Field, bool), String> {
    let mut allowed = vec![false; (max + 1) as usize];
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|_| format!("{name}: bad step `{s}`"))?),
            None => (part, 1),
        };
        if step == 0 {
            return Err(format!("{name}: step must be greater than 0"));
        }
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let a = a.parse::<u32>().map_err(|_| format!("{name}: bad value `{a}`"))?;
            let b = b.parse::<u32>().map_err(|_| format!("{name}: bad value `{b}`"))?;
            (a, b)
        } else {
            let v = range.parse::<u32>().map_err(|_| format!("{name}: bad value `{range}`"))?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{name}: values must be within {min}-{max}"));
        }
        let mut v = lo;
        while v <= hi {
            if let Some(slot) = allowed.get_mut(v as usize) {
                *slot = true;
            }
            v += step;
        }
    }
    Ok((Field(allowed), text != "*"))
}

impl Cron {
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [m, h, d, mo, w] = parts.as_slice() else {
            return Err(String::from("must have five fields: minute hour day month weekday"));
        };
        let (minute, _) = field(m, 0, 59, "minute")?;
        let (hour, _) = field(h, 0, 23, "hour")?;
        let (day, day_set) = field(d, 1, 31, "day")?;
        let (month, _) = field(mo, 1, 12, "month")?;
        // 0 and 7 are both Sunday.
        let (mut weekday, weekday_set) = field(w, 0, 7, "weekday")?;
        if weekday.0.get(7).copied().unwrap_or(false)
            && let Some(sunday) = weekday.0.get_mut(0)
        {
            *sunday = true;
        }
        Ok(Self { minute, hour, day, month, weekday, either_day: day_set && weekday_set })
    }

    /// Whether the minute starting at `unix_minute` (minutes since the epoch, UTC) matches.
    pub fn matches(&self, unix_minute: i64) -> bool {
        let at = |f: &Field, v: i64| usize::try_from(v).ok().and_then(|v| f.0.get(v).copied()).unwrap_or(false);
        let minute = unix_minute.rem_euclid(60);
        let hour = unix_minute.div_euclid(60).rem_euclid(24);
        let days = unix_minute.div_euclid(1440);
        let (_, month, day) = civil(days);
        // 1970-01-01 was a Thursday (4).
        let weekday = (days + 4).rem_euclid(7);
        let day_ok = if self.either_day {
            at(&self.day, day) || at(&self.weekday, weekday)
        } else {
            at(&self.day, day) && at(&self.weekday, weekday)
        };
        at(&self.minute, minute) && at(&self.hour, hour) && at(&self.month, month) && day_ok
    }
}

/// (year, month 1–12, day 1–31) of `days` since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Checks the schedule every second until the service is gone or the bus closes.
pub async fn run(ops: Weak<Ops>) {
    let closed = match ops.upgrade() {
        Some(o) => o.kernel.events.closed(),
        None => return,
    };
    tokio::pin!(closed);
    let mut last_minute = i64::MIN;
    loop {
        if let Some(ops) = ops.upgrade() {
            let minute = ops.kernel.clock.now().as_unix_seconds().div_euclid(60);
            if minute != last_minute {
                last_minute = minute;
                tick(&ops, minute).await;
            }
        } else {
            return;
        }
        tokio::select! {
            () = &mut closed => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn tick(ops: &Arc<Ops>, minute: i64) {
    let settings = ops.settings();
    let Some(cron) = settings.backup_schedule.as_deref().and_then(|c| Cron::parse(c).ok()) else { return };
    if !cron.matches(minute) {
        return;
    }
    let task_id = format!("task_scheduled_backup_{minute}");
    match crate::backup::start_scheduled(ops, &Principal::system(), &task_id).await {
        Ok(()) => tracing::info!(task = %task_id, "scheduled backup started"),
        Err(e) if e.is_unique_violation() => tracing::debug!("another instance runs this minute's backup"),
        Err(e) => tracing::warn!(error = %e, "scheduled backup not started"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_fields() {
        // 2026-12-03T08:30Z is a Thursday.
        let minute = 1_796_286_600 / 60;
        assert_eq!(civil(minute / 1440), (2026, 12, 3));
        assert!(Cron::parse("* * * * *").is_ok_and(|c| c.matches(minute)));
        assert!(Cron::parse("30 8 * * *").is_ok_and(|c| c.matches(minute)));
        assert!(Cron::parse("*/15 8-9 3 12 4").is_ok_and(|c| c.matches(minute)));
        assert!(Cron::parse("0 8 * * *").is_ok_and(|c| !c.matches(minute)));
        assert!(Cron::parse("30 8 * * 1").is_ok_and(|c| !c.matches(minute)));
        assert!(Cron::parse("61 * * * *").is_err());
        assert!(Cron::parse("* * *").is_err());
    }
}
