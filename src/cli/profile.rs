//! `churn profile`: what the stored events look like to the churn
//! definition (span, types, returns, eligibility per lookback, constant
//! features), with hints naming the setting to change.

use anyhow::{Context, Result};

use super::JsonFlag;
use super::output::{print_json, print_line};
use crate::config::Settings;
use crate::startup::Stores;

pub async fn run(settings: Settings, flag: JsonFlag) -> Result<()> {
    let p = Stores::open(&settings)
        .await?
        .profile(&settings)?
        .run()
        .await
        .context("profiling the store")?;
    if flag.json {
        return print_json(&p);
    }
    let mut lines = vec![format!(
        "{} events from {} users, {} to {} ({:.0} days)",
        p.events,
        p.users,
        p.first_event.as_deref().unwrap_or("-"),
        p.last_event.as_deref().unwrap_or("-"),
        p.span_days
    )];
    lines.push("events per type:".into());
    for t in p.event_types.iter().take(30) {
        lines.push(format!(
            "  {:<24} {:>12} events  {:>9} users  {:>5.1}% with amount",
            t.event_type,
            t.events,
            t.users,
            100.0 * t.with_amount as f64 / t.events.max(1) as f64
        ));
    }
    if p.event_types.len() > 30 {
        lines.push(format!("  ... and {} more types", p.event_types.len() - 30));
    }
    if let Some(r) = &p.refunds {
        lines.push(format!(
            "refunds (negative amounts): {} events, {:.1}% of those with an amount, {:.1}% of the positive amounts refunded (types: {})",
            r.events,
            100.0 * r.share_of_amount_events,
            100.0 * r.share_of_revenue,
            r.event_types.join(", ")
        ));
    }
    if let Some(g) = p.median_gap_days {
        lines.push(format!(
            "median gap between a user's active days: {g:.1} days"
        ));
    }
    if let Some(cutoff) = &p.cutoff {
        lines.push(format!(
            "at the validation cutoff {cutoff}: {} users with history; eligible per lookback \
             (share of all {} users in the store, as `churn train` counts):",
            p.users_at_cutoff, p.users
        ));
        for e in &p.eligibility {
            lines.push(format!(
                "  lookback {:>4} days: {:>9} eligible ({:>5.1}%)",
                e.lookback_days,
                e.eligible_users,
                100.0 * e.share
            ));
        }
        lines.push(format!(
            "constant features: {} of {}{}",
            p.constant_features.len(),
            p.features,
            if p.constant_features.is_empty() {
                String::new()
            } else {
                format!(" ({})", p.constant_features.join(", "))
            }
        ));
    }
    if let Some(r) = &p.recommended {
        lines.push(format!(
            "recommended for this log: horizon {} days, lookback {} days, features_as_of \"{}\"",
            r.horizon_days, r.lookback_days, r.features_as_of
        ));
        for reason in &r.reasons {
            lines.push(format!("  {reason}"));
        }
    }
    for h in &p.hints {
        lines.push(format!("hint: {h}"));
    }
    print_line(&lines.join("\n"))
}
