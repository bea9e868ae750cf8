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
    money::{Currency, Money, MoneyError},
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
    pub fn check_client(&self, client: &str) -> Result<(), RateRefusal> {
        let Some((limit, limiter)) = &self.per_client else {
            return Ok(());
        };
        limiter
            .check_key(&client.to_owned())
            .map_err(|not_until| RateRefusal::Client {
                client: client.to_owned(),
                limit: *limit,
                retry_after: not_until.wait_time_from(self.clock.now()),
            })
    }

    /// Takes one request from the bucket of the most specific pattern matching `tool`.
    pub fn check_tool(&self, tool: &str) -> Result<(), RateRefusal> {
        let Some((glob, limit, limiter)) = self
            .per_tool
            .iter()
            .filter(|(glob, _, _)| glob.matches(tool))
            .max_by_key(|(glob, _, _)| glob.specificity())
        else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| RateRefusal::Tool {
            glob: glob.clone(),
            limit: *limit,
            retry_after: not_until.wait_time_from(self.clock.now()),
        })
    }
}

/// A rate limit that refused a request, and when to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateRefusal {
    /// The client's own bucket (`[limits.per_client]`) is empty.
    #[error(
        "rate limit: client {client} may make {} requests a minute (burst {}); retry after {}",
        limit.requests_per_minute,
        limit.burst,
        seconds(*retry_after)
    )]
    Client {
        /// The client.
        client: String,
        /// Its limit.
        limit: RateLimit,
        /// How long until a request fits.
        retry_after: Duration,
    },
    /// The bucket of the most specific `[limits.per_tool]` pattern is empty.
    #[error(
        "rate limit: tools matching {glob} may be called {} times a minute (burst {}); retry after {}",
        limit.requests_per_minute,
        limit.burst,
        seconds(*retry_after)
    )]
    Tool {
        /// The pattern.
        glob: ToolGlob,
        /// Its limit.
        limit: RateLimit,
        /// How long until a call fits.
        retry_after: Duration,
    },
}

/// An effect budget that an execution would exceed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetRefusal {
    /// `[limits] emails_per_hour`.
    #[error(
        "budget emails_per_hour ({max}) is spent: {used} sent in the last hour; the owner can raise [limits] emails_per_hour"
    )]
    EmailsPerHour {
        /// The budget.
        max: u32,
        /// Sent in the last hour.
        used: u32,
    },
    /// `[limits] new_recipients_per_day`.
    #[error(
        "budget new_recipients_per_day ({max}) is spent: {used} first-time recipients in the last 24 hours, and this email adds {new}; the owner can raise [limits] new_recipients_per_day"
    )]
    NewRecipientsPerDay {
        /// The budget.
        max: u32,
        /// First-time recipients in the last 24 hours.
        used: u32,
        /// This email's first-time recipients.
        new: u32,
    },
    /// `[limits] payments_per_day`.
    #[error(
        "budget payments_per_day ({max}) is spent: {used} payments in the last 24 hours; the owner can raise [limits] payments_per_day"
    )]
    PaymentsPerDay {
        /// The budget.
        max: u32,
        /// Payments in the last 24 hours.
        used: u32,
    },
    /// `[limits] payment_amount_per_day.<CURRENCY>`.
    #[error(
        "budget payment_amount_per_day.{currency} ({}) would be exceeded: {} {currency} paid in the last 24 hours, and this payment is {} {currency}; the owner can raise [limits] payment_amount_per_day",
        max.amount(),
        used.amount(),
        amount.amount()
    )]
    PaymentAmountPerDay {
        /// The currency.
        currency: Currency,
        /// The budget.
        max: Money,
        /// Paid in the last 24 hours.
        used: Money,
        /// This payment.
        amount: Money,
    },
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
    /// Amount paid, in its currency's minor units.
    pub amount: Option<Money>,
}

/// Why a payment's payload cannot be counted against the budgets (so it does not run).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpendRefusal {
    /// No `currency`.
    #[error("the payment's payload has no currency, so its budget cannot be checked")]
    NoCurrency,
    /// No `amount`, or not a string.
    #[error(
        "the payment's payload has no readable amount (a decimal string such as \"1250.00\"; a number is refused), so its budget cannot be checked"
    )]
    NoAmount,
    /// A currency or amount that does not parse exactly.
    #[error("the payment's {field}: {error}, so its budget cannot be checked")]
    Unreadable {
        /// `currency` or `amount`.
        field: &'static str,
        /// Why.
        error: MoneyError,
    },
}

impl Spend {
    /// What an approved payload in `domain` spends: an email counts once with its `to` and
    /// `cc` addresses; a payment once with its `amount` (a decimal string at the currency's
    /// precision, never a float) in `currency`.
    pub fn of(domain: Domain, payload: &Value) -> Result<Self, SpendRefusal> {
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
                let code = payload
                    .get("currency")
                    .and_then(Value::as_str)
                    .ok_or(SpendRefusal::NoCurrency)?;
                let currency =
                    Currency::new(code.trim()).map_err(|error| SpendRefusal::Unreadable {
                        field: "currency",
                        error,
                    })?;
                let amount = payload
                    .get("amount")
                    .and_then(Value::as_str)
                    .ok_or(SpendRefusal::NoAmount)?;
                let amount = Money::parse_exact(amount, currency).map_err(|error| {
                    SpendRefusal::Unreadable {
                        field: "amount",
                        error,
                    }
                })?;
                spend.amount = Some(amount);
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
    #[serde(default, deserialize_with = "stored_amount")]
    amount: Option<Money>,
    /// The ledger `seq` of the approval use that spent it, so a use given back can be
    /// refunded ([`Budgets::refund`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    use_seq: Option<u64>,
}

/// A spending's amount as `budgets.json` holds it: `{"amount": "60.00", "currency": "EUR"}`,
/// or, as written before amounts were money, `["EUR", 60.0]`: read through its shortest
/// decimal form and rounded up to the currency's precision (counting a little more spent is
/// the safe side); an unknown currency's old entry counts nothing.
fn stored_amount<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Money>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Money(Money),
        Legacy(String, f64),
    }
    Ok(match Option::<Stored>::deserialize(d)? {
        None => None,
        Some(Stored::Money(money)) => Some(money),
        Some(Stored::Legacy(code, amount)) => legacy_amount(&code, amount),
    })
}

/// An amount written as a float before amounts were money, rounded up to minor units.
fn legacy_amount(code: &str, amount: f64) -> Option<Money> {
    let currency = Currency::new(code.trim().to_ascii_uppercase().as_str()).ok()?;
    if !amount.is_finite() || amount < 0.0 {
        return None;
    }
    // Rust prints a float's shortest exact decimal form, never with an exponent.
    let text = format!("{amount}");
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let places = usize::from(currency.exponent());
    let kept: String = fraction.chars().take(places).collect();
    let cut = fraction.chars().skip(places).any(|c| c != '0');
    let exact = if kept.is_empty() {
        whole.to_owned()
    } else {
        format!("{whole}.{kept}")
    };
    let money = Money::parse(&exact, currency).ok()?;
    Some(if cut {
        Money::from_minor(money.minor().saturating_add(1), currency)
    } else {
        money
    })
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
    pub fn check(&self, limits: &Limits, spend: &Spend) -> Result<(), BudgetRefusal> {
        self.check_at(limits, spend, Utc::now())
    }

    fn check_at(
        &self,
        limits: &Limits,
        spend: &Spend,
        now: DateTime<Utc>,
    ) -> Result<(), BudgetRefusal> {
        let hour = now - TimeDelta::hours(1);
        let day = now - TimeDelta::days(1);
        let since = |from: DateTime<Utc>| self.spent.iter().filter(move |s| s.at > from);
        if let Some(max) = limits.emails_per_hour.filter(|_| spend.emails > 0) {
            let used: u32 = since(hour).map(|s| s.emails).sum();
            if used + spend.emails > max {
                return Err(BudgetRefusal::EmailsPerHour { max, used });
            }
        }
        let new = self.new_recipients(spend);
        if let Some(max) = limits.new_recipients_per_day.filter(|_| new > 0) {
            let used: u32 = since(day).map(|s| s.new_recipients).sum();
            if used + new > max {
                return Err(BudgetRefusal::NewRecipientsPerDay { max, used, new });
            }
        }
        if let Some(max) = limits.payments_per_day.filter(|_| spend.payments > 0) {
            let used: u32 = since(day).map(|s| s.payments).sum();
            if used + spend.payments > max {
                return Err(BudgetRefusal::PaymentsPerDay { max, used });
            }
        }
        if let Some(amount) = spend.amount
            && let Some(max) = limits.payment_amount_per_day.get(&amount.currency())
        {
            let currency = amount.currency();
            let mut used = Money::zero(currency);
            for paid in since(day).filter_map(|s| s.amount) {
                if paid.currency() == currency {
                    used = used.checked_add(paid).unwrap_or(*max);
                }
            }
            let after = used.checked_add(amount).map(|m| m.minor());
            if after.is_err() || after.is_ok_and(|minor| minor > max.minor()) {
                return Err(BudgetRefusal::PaymentAmountPerDay {
                    currency,
                    max: *max,
                    used,
                    amount,
                });
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
            amount: spend.amount,
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

    fn eur() -> Currency {
        Currency::new("EUR").unwrap()
    }

    fn limits() -> Limits {
        Limits {
            emails_per_hour: Some(2),
            new_recipients_per_day: Some(1),
            payments_per_day: Some(5),
            payment_amount_per_day: BTreeMap::from([(eur(), Money::parse("100", eur()).unwrap())]),
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
            .unwrap_err()
            .to_string();
        assert!(why.contains("new_recipients_per_day"), "{why}");
        budgets.check(&limits(), &first).unwrap();
        budgets.record(&first, 1).unwrap();
        let mut reloaded = Budgets::load(dir.path()).unwrap();
        let why = reloaded.check(&limits(), &first).unwrap_err().to_string();
        assert!(why.contains("emails_per_hour (2)"), "{why}");

        reloaded.check(&limits(), &pay("60.00")).unwrap();
        reloaded.record(&pay("60.00"), 3).unwrap();
        reloaded.check(&limits(), &pay("40.00")).unwrap();
        let why = reloaded
            .check(&limits(), &pay("40.01"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            why,
            "budget payment_amount_per_day.EUR (100.00) would be exceeded: 60.00 EUR paid in the last 24 hours, and this payment is 40.01 EUR; the owner can raise [limits] payment_amount_per_day"
        );
        assert!(Spend::of(Domain::Payments, &json!({"amount": "1.00"})).is_err());
        let float = json!({"amount": 1.5, "currency": "EUR"});
        assert_eq!(
            Spend::of(Domain::Payments, &float),
            Err(SpendRefusal::NoAmount)
        );
        let places = json!({"amount": "1.5", "currency": "EUR"});
        assert!(
            Spend::of(Domain::Payments, &places).is_err(),
            "EUR has two places"
        );
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
        let why = rates.check_client("a").unwrap_err().to_string();
        assert!(
            why.contains("client a") && why.contains("retry after "),
            "{why}"
        );
        rates.check_tool("email_send").unwrap();
        rates.check_tool("vault_status").unwrap();
        let why = rates.check_tool("email_fetch").unwrap_err().to_string();
        assert!(why.contains("email_*") && why.ends_with(" s"), "{why}");
        assert_eq!(seconds(Duration::from_millis(1150)), "1.2 s");
    }

    /// A payment of `amount` euros.
    fn pay(amount: &str) -> Spend {
        Spend::of(
            Domain::Payments,
            &json!({"amount": amount, "currency": "EUR"}),
        )
        .unwrap()
    }

    /// `budgets.json` written when amounts were floats still reads, each amount rounded up
    /// to the currency's minor units; the new form round-trips as decimal strings.
    #[test]
    fn budgets_read_amounts_written_as_floats() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now().to_rfc3339();
        let old = format!(
            r#"[{{"at":"{now}","payments":1,"amount":["EUR",60.1]}},{{"at":"{now}","payments":1,"amount":["EUR",0.005]}},{{"at":"{now}","payments":1,"amount":["XXQ",5.0]}}]"#
        );
        std::fs::write(dir.path().join(BUDGETS_FILE), old).unwrap();
        let mut budgets = Budgets::load(dir.path()).unwrap();
        let amounts: Vec<_> = budgets
            .spent
            .iter()
            .map(|s| s.amount.map(|m| m.minor()))
            .collect();
        assert_eq!(amounts, [Some(6010), Some(1), None]);
        budgets.record(&pay("1.00"), 4).unwrap();
        let text = std::fs::read_to_string(dir.path().join(BUDGETS_FILE)).unwrap();
        assert!(
            text.contains(r#"{"amount":"1.00","currency":"EUR"}"#),
            "{text}"
        );
        assert_eq!(Budgets::load(dir.path()).unwrap().spent.len(), 4);
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
            .unwrap_err()
            .to_string();
        assert!(hour.starts_with("budget emails_per_hour (2)"), "{hour}");

        assert!(budgets.refund(8).unwrap());
        assert!(!budgets.refund(8).unwrap(), "refunded twice");
        assert!(!budgets.refund(99).unwrap(), "an unknown use");
        let mut reloaded = Budgets::load(dir.path()).unwrap();
        reloaded.check(&limits(), &mail("a@example.org")).unwrap();
        let new = reloaded
            .check(&limits(), &mail("b@example.org"))
            .unwrap_err()
            .to_string();
        assert!(
            new.starts_with("budget new_recipients_per_day (1)"),
            "{new}"
        );

        reloaded.record(&pay("60.00"), 9).unwrap();
        assert!(reloaded.check(&limits(), &pay("60.00")).is_err());
        assert!(reloaded.refund(9).unwrap());
        reloaded.check(&limits(), &pay("60.00")).unwrap();
    }
}
