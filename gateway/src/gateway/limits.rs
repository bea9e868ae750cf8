//! The owner's `[limits]`: request rates per client and per tool (token buckets, governor)
//! and effect budgets that bound what even an approved action may do (emails per hour, new
//! recipients per day, payments per day, amount paid per day per currency).
//!
//! Budgets survive a restart: what was spent in the last 24 hours is kept in
//! `<state>/budgets.json`, and every address ever sent to in `<state>/known-recipients`, so
//! restarting the gateway never hands out a fresh budget.

use std::{
    collections::BTreeSet,
    fs,
    io::{self, Write},
    num::NonZeroU32,
    path::{Path, PathBuf},
    time::Duration,
};

use aie_shared::{
    config::{Limits, RateLimit},
    policy::ToolGlob,
    vault::Domain,
};
use chrono::{DateTime, TimeDelta, Utc};
use governor::{
    DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota,
    clock::{Clock, DefaultClock},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The state-folder file holding the budget spending of the last 24 hours.
pub const BUDGETS_FILE: &str = "budgets.json";
/// The state-folder file listing every recipient an email was ever sent to, one a line.
pub const KNOWN_RECIPIENTS_FILE: &str = "known-recipients";

/// The quota of one `{ requests_per_minute, burst }`.
fn quota(limit: &RateLimit) -> Quota {
    let rpm = NonZeroU32::new(limit.requests_per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limit.burst).unwrap_or(rpm);
    Quota::per_minute(rpm).allow_burst(burst)
}

/// "1.2 s": a wait rounded up to the next tenth of a second, so retrying then succeeds.
fn seconds(wait: Duration) -> String {
    let tenths = wait.as_millis().div_ceil(100).max(1);
    format!("{}.{} s", tenths / 10, tenths % 10)
}

/// The request-rate limits of one config: one keyed bucket per client, one bucket per
/// `[limits.per_tool]` pattern (shared by all clients).
pub struct RateLimits {
    clock: DefaultClock,
    per_client: Option<(RateLimit, DefaultKeyedRateLimiter<String>)>,
    per_tool: Vec<(ToolGlob, RateLimit, DefaultDirectRateLimiter)>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("per_client", &self.per_client.as_ref().map(|(l, _)| l))
            .field("per_tool", &self.per_tool.len())
            .finish()
    }
}

impl RateLimits {
    /// Fresh, full buckets for `limits`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            clock: DefaultClock::default(),
            per_client: limits
                .per_client
                .map(|limit| (limit, DefaultKeyedRateLimiter::keyed(quota(&limit)))),
            per_tool: limits
                .per_tool
                .iter()
                .map(|(glob, limit)| {
                    (
                        glob.clone(),
                        *limit,
                        DefaultDirectRateLimiter::direct(quota(limit)),
                    )
                })
                .collect(),
        }
    }

    /// Takes one request from `client`'s bucket; the refusal says when to retry.
    pub fn check_client(&self, client: &str) -> Result<(), String> {
        let Some((limit, limiter)) = &self.per_client else {
            return Ok(());
        };
        limiter.check_key(&client.to_owned()).map_err(|not_until| {
            format!(
                "rate limit: client {client} may make {} requests a minute (burst {}); retry after {}",
                limit.requests_per_minute,
                limit.burst,
                seconds(not_until.wait_time_from(self.clock.now()))
            )
        })
    }

    /// Takes one request from the bucket of the most specific pattern matching `tool`.
    pub fn check_tool(&self, tool: &str) -> Result<(), String> {
        let Some((glob, limit, limiter)) = self
            .per_tool
            .iter()
            .filter(|(glob, _, _)| glob.matches(tool))
            .max_by_key(|(glob, _, _)| glob.specificity())
        else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            format!(
                "rate limit: tools matching {glob} may be called {} times a minute (burst {}); retry after {}",
                limit.requests_per_minute,
                limit.burst,
                seconds(not_until.wait_time_from(self.clock.now()))
            )
        })
    }
}

/// What one execution spends of the budgets, computed from its payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spend {
    /// Emails sent (0 or 1).
    pub emails: u32,
    /// The recipients (`to` and `cc`, lowercase addresses).
    pub recipients: BTreeSet<String>,
    /// Payments made (0 or 1).
    pub payments: u32,
    /// Amount paid, with its currency.
    pub amount: Option<(String, f64)>,
}

impl Spend {
    /// What an approved payload in `domain` spends: an email counts once with its `to` and
    /// `cc` addresses; a payment once with its `amount` in `currency`.
    pub fn of(domain: Domain, payload: &Value) -> Result<Self, String> {
        let mut spend = Spend::default();
        match domain {
            Domain::Email => {
                spend.emails = 1;
                for field in ["to", "cc", "bcc"] {
                    for raw in payload
                        .get(field)
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(address) = raw.as_str().map(bare_address) {
                            spend.recipients.insert(address);
                        }
                    }
                }
            }
            Domain::Payments => {
                spend.payments = 1;
                let currency = payload
                    .get("currency")
                    .and_then(Value::as_str)
                    .map(|c| c.trim().to_ascii_uppercase())
                    .ok_or(
                        "the payment's payload has no currency, so its budget cannot be checked",
                    )?;
                let amount = match payload.get("amount") {
                    Some(Value::Number(n)) => n.as_f64(),
                    Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
                    _ => None,
                }
                .filter(|a| a.is_finite() && *a >= 0.0)
                .ok_or(
                    "the payment's payload has no readable amount, so its budget cannot be checked",
                )?;
                spend.amount = Some((currency, amount));
            }
            _ => {}
        }
        Ok(spend)
    }
}

/// `Name <a@b>` or `a@b`, as the lowercase bare address.
fn bare_address(raw: &str) -> String {
    let inner = match (raw.rfind('<'), raw.rfind('>')) {
        (Some(open), Some(close)) if open < close => &raw[open + 1..close],
        _ => raw,
    };
    inner.trim().to_ascii_lowercase()
}

/// One spending, as kept in `budgets.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Spent {
    at: DateTime<Utc>,
    #[serde(default)]
    emails: u32,
    #[serde(default)]
    new_recipients: u32,
    #[serde(default)]
    payments: u32,
    #[serde(default)]
    amount: Option<(String, f64)>,
    /// The ledger `seq` of the approval use that spent it, so a use given back can be
    /// refunded ([`Budgets::refund`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    use_seq: Option<u64>,
}

/// The effect budgets' running totals, in the state folder. Blocking file I/O.
#[derive(Debug)]
pub struct Budgets {
    dir: PathBuf,
    spent: Vec<Spent>,
    known: BTreeSet<String>,
}

impl Budgets {
    /// Reads the totals and the known recipients from `state_dir` (none when missing).
    pub fn load(state_dir: &Path) -> io::Result<Self> {
        let spent = match fs::read(state_dir.join(BUDGETS_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: {e} (move it aside to start the budgets over)",
                        state_dir.join(BUDGETS_FILE).display()
                    ),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let known = match fs::read_to_string(state_dir.join(KNOWN_RECIPIENTS_FILE)) {
            Ok(text) => text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            dir: state_dir.to_path_buf(),
            spent,
            known,
        })
    }

    /// Whether `spend` fits every configured budget now; the refusal names the budget.
    pub fn check(&self, limits: &Limits, spend: &Spend) -> Result<(), String> {
        self.check_at(limits, spend, Utc::now())
    }

    fn check_at(&self, limits: &Limits, spend: &Spend, now: DateTime<Utc>) -> Result<(), String> {
        let hour = now - TimeDelta::hours(1);
        let day = now - TimeDelta::days(1);
        let since = |from: DateTime<Utc>| self.spent.iter().filter(move |s| s.at > from);
        if let Some(max) = limits.emails_per_hour.filter(|_| spend.emails > 0) {
            let used: u32 = since(hour).map(|s| s.emails).sum();
            if used + spend.emails > max {
                return Err(format!(
                    "budget emails_per_hour ({max}) is spent: {used} sent in the last hour; the owner can raise [limits] emails_per_hour"
                ));
            }
        }
        let new = self.new_recipients(spend);
        if let Some(max) = limits.new_recipients_per_day.filter(|_| new > 0) {
            let used: u32 = since(day).map(|s| s.new_recipients).sum();
            if used + new > max {
                return Err(format!(
                    "budget new_recipients_per_day ({max}) is spent: {used} first-time recipients in the last 24 hours, and this email adds {new}; the owner can raise [limits] new_recipients_per_day"
                ));
            }
        }
        if let Some(max) = limits.payments_per_day.filter(|_| spend.payments > 0) {
            let used: u32 = since(day).map(|s| s.payments).sum();
            if used + spend.payments > max {
                return Err(format!(
                    "budget payments_per_day ({max}) is spent: {used} payments in the last 24 hours; the owner can raise [limits] payments_per_day"
                ));
            }
        }
        if let Some((currency, amount)) = &spend.amount
            && let Some(max) = limits.payment_amount_per_day.get(currency)
        {
            let used: f64 = since(day)
                .filter_map(|s| s.amount.as_ref())
                .filter(|(c, _)| c == currency)
                .map(|(_, a)| a)
                .sum();
            if used + amount > *max {
                return Err(format!(
                    "budget payment_amount_per_day.{currency} ({max}) would be exceeded: {used} {currency} paid in the last 24 hours, and this payment is {amount} {currency}; the owner can raise [limits] payment_amount_per_day"
                ));
            }
        }
        Ok(())
    }

    /// How many of the spend's recipients were never sent to.
    fn new_recipients(&self, spend: &Spend) -> u32 {
        let new = spend
            .recipients
            .iter()
            .filter(|r| !self.known.contains(*r))
            .count();
        u32::try_from(new).unwrap_or(u32::MAX)
    }

    /// Records `spend` as spent now by the approval use `use_seq` (an approval was just
    /// taken for it) and writes both files to disk. An execution counts whether or not it
    /// then succeeds, the safe reading, unless the server certifies that it did nothing
    /// ([`Budgets::refund`]).
    pub fn record(&mut self, spend: &Spend, use_seq: u64) -> io::Result<()> {
        if spend == &Spend::default() {
            return Ok(());
        }
        let now = Utc::now();
        let new: Vec<String> = spend
            .recipients
            .iter()
            .filter(|r| !self.known.contains(*r))
            .cloned()
            .collect();
        self.spent.retain(|s| s.at > now - TimeDelta::days(1));
        self.spent.push(Spent {
            at: now,
            emails: spend.emails,
            new_recipients: u32::try_from(new.len()).unwrap_or(u32::MAX),
            payments: spend.payments,
            amount: spend.amount.clone(),
            use_seq: Some(use_seq),
        });
        self.save()?;
        if !new.is_empty() {
            let mut file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(KNOWN_RECIPIENTS_FILE))?;
            let lines: String = new.iter().map(|r| format!("{r}\n")).collect();
            file.write_all(lines.as_bytes())?;
            file.sync_data()?;
            self.known.extend(new);
        }
        Ok(())
    }
}

impl Budgets {
    /// Gives back what the approval use `use_seq` spent of the emails and payments budgets,
    /// once the server certified that the execution did nothing (the approval was given
    /// back too). Its first-time recipients stay counted and known: an address, once tried,
    /// is not tried as new again, which is the stricter reading. Returns whether anything
    /// was given back; a spending older than the budgets' day is gone already.
    pub fn refund(&mut self, use_seq: u64) -> io::Result<bool> {
        let Some(spent) = self.spent.iter_mut().find(|s| s.use_seq == Some(use_seq)) else {
            return Ok(false);
        };
        if spent.emails == 0 && spent.payments == 0 && spent.amount.is_none() {
            return Ok(false);
        }
        spent.emails = 0;
        spent.payments = 0;
        spent.amount = None;
        self.save()?;
        Ok(true)
    }

    /// Writes the spending to `budgets.json`.
    fn save(&self) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let text = serde_json::to_vec(&self.spent).map_err(io::Error::other)?;
        write_replacing(&self.dir.join(BUDGETS_FILE), &text)
    }
}

/// Writes `path` through a temporary file and a rename, so a crash leaves the old or the
/// new content, never half of one.
fn write_replacing(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn limits() -> Limits {
        Limits {
            emails_per_hour: Some(2),
            new_recipients_per_day: Some(1),
            payments_per_day: Some(5),
            payment_amount_per_day: BTreeMap::from([("EUR".to_owned(), 100.0)]),
            ..Limits::default()
        }
    }

    /// Emails per hour, first-time recipients and amounts are counted and refused by name,
    /// and the counts survive a reload from the state folder.
    #[test]
    fn budgets_count_and_refuse_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut budgets = Budgets::load(dir.path()).unwrap();
        let mail = |to: &str| Spend::of(Domain::Email, &json!({"to": [to]})).unwrap();
        let first = mail("Ann <ANN@example.com>");
        assert_eq!(
            first.recipients,
            BTreeSet::from(["ann@example.com".to_owned()])
        );
        budgets.check(&limits(), &first).unwrap();
        budgets.record(&first, 1).unwrap();
        let why = budgets
            .check(&limits(), &mail("bob@example.com"))
            .unwrap_err();
        assert!(why.contains("new_recipients_per_day"), "{why}");
        budgets.check(&limits(), &first).unwrap();
        budgets.record(&first, 1).unwrap();
        let mut reloaded = Budgets::load(dir.path()).unwrap();
        let why = reloaded.check(&limits(), &first).unwrap_err();
        assert!(why.contains("emails_per_hour (2)"), "{why}");

        reloaded.check(&limits(), &pay(60.0)).unwrap();
        reloaded.record(&pay(60.0), 3).unwrap();
        let why = reloaded.check(&limits(), &pay(50.0)).unwrap_err();
        assert!(why.contains("payment_amount_per_day.EUR"), "{why}");
        assert!(Spend::of(Domain::Payments, &json!({"amount": 1})).is_err());
    }

    /// A bucket refuses once empty and says when to retry.
    #[test]
    fn rate_limits_say_when_to_retry() {
        let limits = Limits {
            per_client: Some(RateLimit {
                requests_per_minute: 1,
                burst: 1,
            }),
            per_tool: BTreeMap::from([(
                ToolGlob::new("email_*").unwrap(),
                RateLimit {
                    requests_per_minute: 60,
                    burst: 1,
                },
            )]),
            ..Limits::default()
        };
        let rates = RateLimits::new(&limits);
        rates.check_client("a").unwrap();
        rates.check_client("b").unwrap();
        let why = rates.check_client("a").unwrap_err();
        assert!(
            why.contains("client a") && why.contains("retry after "),
            "{why}"
        );
        rates.check_tool("email_send").unwrap();
        rates.check_tool("vault_status").unwrap();
        let why = rates.check_tool("email_fetch").unwrap_err();
        assert!(why.contains("email_*") && why.ends_with(" s"), "{why}");
        assert_eq!(seconds(Duration::from_millis(1150)), "1.2 s");
    }

    /// A payment of `amount` euros.
    fn pay(amount: f64) -> Spend {
        Spend::of(
            Domain::Payments,
            &json!({"amount": amount, "currency": "eur"}),
        )
        .unwrap()
    }

    /// A use given back refunds its email or payment, once, also after a reload; its
    /// first-time recipient stays counted and known; an unknown use refunds nothing.
    #[test]
    fn budgets_refund_a_use_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut budgets = Budgets::load(dir.path()).unwrap();
        let mail = |to: &str| Spend::of(Domain::Email, &json!({"to": [to]})).unwrap();
        budgets.record(&mail("a@example.org"), 7).unwrap();
        budgets.record(&mail("a@example.org"), 8).unwrap();
        let hour = budgets
            .check(&limits(), &mail("a@example.org"))
            .unwrap_err();
        assert!(hour.starts_with("budget emails_per_hour (2)"), "{hour}");

        assert!(budgets.refund(8).unwrap());
        assert!(!budgets.refund(8).unwrap(), "refunded twice");
        assert!(!budgets.refund(99).unwrap(), "an unknown use");
        let mut reloaded = Budgets::load(dir.path()).unwrap();
        reloaded.check(&limits(), &mail("a@example.org")).unwrap();
        let new = reloaded
            .check(&limits(), &mail("b@example.org"))
            .unwrap_err();
        assert!(
            new.starts_with("budget new_recipients_per_day (1)"),
            "{new}"
        );

        reloaded.record(&pay(60.0), 9).unwrap();
        assert!(reloaded.check(&limits(), &pay(60.0)).is_err());
        assert!(reloaded.refund(9).unwrap());
        reloaded.check(&limits(), &pay(60.0)).unwrap();
    }
}
