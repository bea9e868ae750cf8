//! Triage: a category and a priority for each mail, from rules the owner writes (VIP
//! senders and domains, keywords, headers) and a built-in set that works with no config.
//! Every rule that fires leaves a reason, so the owner can see why a mail was filed as it was.
//!
//! Rules are tried in order: the owner's VIP lists, the owner's rules, then the built-in
//! ones. For each of category and priority, the first rule that fires and sets it wins;
//! later rules still leave their reason, marked as kept from an earlier rule.

pub use aie_shared::config::{Priority, TriageRule};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The category of a mail no rule put anywhere.
pub const DEFAULT_CATEGORY: &str = "other";

/// The headers rules can test (lower-case); intake keeps these in the task's `source.headers`
/// so triage can run again from the task alone.
pub const NOTABLE_HEADERS: &[&str] = &[
    "list-unsubscribe",
    "list-id",
    "precedence",
    "auto-submitted",
    "x-spam-flag",
    "x-spam-status",
];

/// The owner's rules and whether the built-in ones follow them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriageRules {
    /// Senders whose mail is high priority (exact addresses).
    pub vip_senders: Vec<String>,
    /// Domains whose mail is high priority (and their subdomains).
    pub vip_domains: Vec<String>,
    /// The owner's rules, in order.
    pub rules: Vec<TriageRule>,
    /// Whether [`builtin_rules`] are tried after the owner's.
    pub builtin: bool,
}

impl Default for TriageRules {
    /// No owner rules; the built-in ones apply.
    fn default() -> Self {
        Self {
            vip_senders: Vec::new(),
            vip_domains: Vec::new(),
            rules: Vec::new(),
            builtin: true,
        }
    }
}

/// The rules that work with no config: newsletters by their list headers, spam by its flag
/// and tell-tale phrases, invoices, sales leads and support requests by their words.
pub fn builtin_rules() -> Vec<TriageRule> {
    let words = |list: &[&str]| list.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
    vec![
        TriageRule {
            name: "spam-flag".into(),
            header: Some("x-spam-flag: yes".into()),
            category: Some("spam".into()),
            priority: Some(Priority::Low),
            ..Default::default()
        },
        TriageRule {
            name: "spam-words".into(),
            keywords: words(&[
                "you have won",
                "claim your prize",
                "lottery",
                "viagra",
                "casino bonus",
                "crypto giveaway",
                "double your bitcoin",
                "100% free",
                "act now",
                "risk-free",
                "wire transfer fee",
                "nigerian prince",
                "inheritance fund",
            ]),
            category: Some("spam".into()),
            priority: Some(Priority::Low),
            ..Default::default()
        },
        TriageRule {
            name: "newsletter-list-unsubscribe".into(),
            header: Some("list-unsubscribe".into()),
            category: Some("newsletter".into()),
            priority: Some(Priority::Low),
            ..Default::default()
        },
        TriageRule {
            name: "newsletter-list-id".into(),
            header: Some("list-id".into()),
            category: Some("newsletter".into()),
            priority: Some(Priority::Low),
            ..Default::default()
        },
        TriageRule {
            name: "newsletter-bulk".into(),
            header: Some("precedence: bulk".into()),
            category: Some("newsletter".into()),
            priority: Some(Priority::Low),
            ..Default::default()
        },
        TriageRule {
            name: "urgent-words".into(),
            keywords: words(&["urgent", "asap", "immediately", "as soon as possible"]),
            priority: Some(Priority::High),
            ..Default::default()
        },
        TriageRule {
            name: "invoice-words".into(),
            keywords: words(&[
                "invoice",
                "payment due",
                "overdue",
                "receipt",
                "billing",
                "remittance",
                "amount due",
            ]),
            category: Some("invoice".into()),
            priority: Some(Priority::Normal),
            ..Default::default()
        },
        TriageRule {
            name: "lead-words".into(),
            keywords: words(&[
                "quote",
                "pricing",
                "price list",
                "interested in",
                "proposal",
                "partnership",
                "book a demo",
                "request a demo",
                "purchase order",
            ]),
            category: Some("lead".into()),
            priority: Some(Priority::Normal),
            ..Default::default()
        },
        TriageRule {
            name: "support-words".into(),
            keywords: words(&[
                "not working",
                "doesn't work",
                "does not work",
                "bug",
                "error",
                "crash",
                "broken",
                "support",
                "help",
                "refund",
                "can't log in",
                "cannot log in",
            ]),
            category: Some("support".into()),
            priority: Some(Priority::Normal),
            ..Default::default()
        },
    ]
}

/// What triage looks at: the sender, the words, and the notable headers.
#[derive(Debug, Clone, Default)]
pub struct TriageInput<'a> {
    /// The sender's address.
    pub from: &'a str,
    /// The subject.
    pub subject: &'a str,
    /// The plain-text body.
    pub body: &'a str,
    /// Notable headers present, as (lower-case name, value).
    pub headers: Vec<(String, String)>,
}

/// The verdict: written to the task's front matter as `triage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Triage {
    /// The category (`other` when no rule set one).
    pub category: String,
    /// The priority (`normal` when no rule set one).
    pub priority: Priority,
    /// One line per rule that fired (or per override), in the order they were tried.
    pub reasons: Vec<String>,
}

/// How much of a body keyword matching reads: enough for any real request, bounded for a
/// huge mail.
const MAX_SCANNED_BODY: usize = 64 * 1024;

impl TriageRules {
    /// Every rule in the order it is tried, VIP lists first.
    fn ordered(&self) -> Vec<TriageRule> {
        let mut all = Vec::new();
        for sender in &self.vip_senders {
            all.push(TriageRule {
                name: "vip-sender".into(),
                from: Some(sender.clone()),
                priority: Some(Priority::High),
                ..Default::default()
            });
        }
        for domain in &self.vip_domains {
            all.push(TriageRule {
                name: "vip-domain".into(),
                domain: Some(domain.clone()),
                priority: Some(Priority::High),
                ..Default::default()
            });
        }
        all.extend(self.rules.iter().cloned());
        if self.builtin {
            all.extend(builtin_rules());
        }
        all
    }

    /// Triages one mail.
    pub fn apply(&self, input: &TriageInput<'_>) -> Triage {
        let from = input.from.trim().to_lowercase();
        let mut text = String::with_capacity(input.subject.len() + 1 + MAX_SCANNED_BODY);
        text.push_str(&input.subject.to_lowercase());
        text.push('\n');
        text.push_str(&truncate(input.body, MAX_SCANNED_BODY).to_lowercase());
        let mut category: Option<String> = None;
        let mut priority: Option<Priority> = None;
        let mut reasons = Vec::new();
        for rule in self.ordered() {
            let Some(matched) = rule_matches(&rule, &from, &text, &input.headers) else {
                continue;
            };
            let mut set = Vec::new();
            let mut kept = Vec::new();
            if let Some(c) = &rule.category {
                match &category {
                    None => {
                        category = Some(c.clone());
                        set.push(format!("category {c}"));
                    }
                    Some(earlier) if earlier != c => kept.push(format!("category {earlier}")),
                    Some(_) => {}
                }
            }
            if let Some(p) = rule.priority {
                match priority {
                    None => {
                        priority = Some(p);
                        set.push(format!("priority {p}"));
                    }
                    Some(earlier) if earlier != p => kept.push(format!("priority {earlier}")),
                    Some(_) => {}
                }
            }
            let mut reason = format!("rule {} matched {matched}", rule.name);
            if !set.is_empty() {
                reason.push_str(&format!(": {}", set.join(", ")));
            }
            if !kept.is_empty() {
                reason.push_str(&format!(" (kept {} from an earlier rule)", kept.join(", ")));
            }
            reasons.push(reason);
        }
        if reasons.is_empty() {
            reasons.push(format!(
                "no rule matched: category {DEFAULT_CATEGORY}, priority normal"
            ));
        }
        Triage {
            category: category.unwrap_or_else(|| DEFAULT_CATEGORY.to_owned()),
            priority: priority.unwrap_or(Priority::Normal),
            reasons,
        }
    }
}

/// What made `rule` fire, or `None` when any of its matchers fails (or it has none).
fn rule_matches(
    rule: &TriageRule,
    from: &str,
    text: &str,
    headers: &[(String, String)],
) -> Option<String> {
    let mut matched = Vec::new();
    if let Some(want) = &rule.from {
        let want = want.trim().to_lowercase();
        if from != want {
            return None;
        }
        matched.push(want);
    }
    if let Some(domain) = &rule.domain {
        let domain = domain.trim().trim_start_matches('@').to_lowercase();
        let sender_domain = from.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let hit = sender_domain == domain || sender_domain.ends_with(&format!(".{domain}"));
        if !hit {
            return None;
        }
        matched.push(domain);
    }
    if !rule.keywords.is_empty() {
        let hit = rule
            .keywords
            .iter()
            .find(|k| contains_words(text, &k.to_lowercase()))?;
        matched.push(format!("keyword {hit:?}"));
    }
    if let Some(header) = &rule.header {
        let (name, needle) = match header.split_once(':') {
            Some((n, v)) => (n.trim().to_lowercase(), Some(v.trim().to_lowercase())),
            None => (header.trim().to_lowercase(), None),
        };
        let value = headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v)?;
        if let Some(needle) = &needle
            && !value.to_lowercase().contains(needle.as_str())
        {
            return None;
        }
        matched.push(format!("header {}", canonical_header(&name)));
    }
    (!matched.is_empty()).then(|| matched.join(" and "))
}

/// `list-unsubscribe` as people write it: `List-Unsubscribe`.
fn canonical_header(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<String>>()
        .join("-")
}

/// Whether `needle` occurs in `haystack` as whole words (not inside a longer word), so
/// `bug` does not fire on `debugging`.
fn contains_words(haystack: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let is_word = |c: char| c.is_alphanumeric();
    let mut start = 0;
    while let Some(found) = haystack[start..].find(needle) {
        let at = start + found;
        let end = at + needle.len();
        let before_ok = haystack[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !is_word(c))
            || !needle.starts_with(is_word);
        let after_ok = haystack[end..].chars().next().is_none_or(|c| !is_word(c))
            || !needle.ends_with(is_word);
        if before_ok && after_ok {
            return true;
        }
        // Step past the first character of this hit (a char boundary).
        start = at + haystack[at..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(from: &'a str, subject: &'a str, body: &'a str) -> TriageInput<'a> {
        TriageInput {
            from,
            subject,
            body,
            headers: Vec::new(),
        }
    }

    /// With no config, a List-Unsubscribe header files a mail as a low-priority newsletter.
    #[test]
    fn triage_default_newsletter_by_header() {
        let mut mail = input("news@shop.example", "Our spring sale", "Deals inside");
        mail.headers
            .push(("list-unsubscribe".into(), "<mailto:u@shop.example>".into()));
        let t = TriageRules::default().apply(&mail);
        assert_eq!(t.category, "newsletter");
        assert_eq!(t.priority, Priority::Low);
        assert_eq!(
            t.reasons,
            [
                "rule newsletter-list-unsubscribe matched header List-Unsubscribe: category newsletter, priority low"
            ]
        );
    }

    /// Spam phrases and invoices are recognised by their words; nothing matching is `other`.
    #[test]
    fn triage_default_keywords() {
        let rules = TriageRules::default();
        let spam = rules.apply(&input(
            "x@y.example",
            "You have WON!",
            "Claim your prize now",
        ));
        assert_eq!(
            (spam.category.as_str(), spam.priority),
            ("spam", Priority::Low)
        );
        let invoice = rules.apply(&input("b@acme.example", "Invoice #42", "Please pay."));
        assert_eq!(invoice.category, "invoice");
        assert!(
            invoice.reasons[0].contains("keyword \"invoice\""),
            "{:?}",
            invoice.reasons
        );
        let plain = rules.apply(&input("f@friend.example", "Lunch?", "Tomorrow at noon"));
        assert_eq!(plain.category, "other");
        assert_eq!(plain.priority, Priority::Normal);
        assert!(plain.reasons[0].starts_with("no rule matched"));
    }

    /// A VIP domain wins the priority and says so; a later rule's priority is kept out.
    #[test]
    fn triage_vip_domain_and_reasons() {
        let rules = TriageRules {
            vip_domains: vec!["example.com".into()],
            ..Default::default()
        };
        let mut mail = input("ceo@sales.example.com", "Weekly digest", "");
        mail.headers
            .push(("list-id".into(), "<digest.example.com>".into()));
        let t = rules.apply(&mail);
        assert_eq!(t.priority, Priority::High);
        assert_eq!(t.category, "newsletter");
        assert_eq!(
            t.reasons[0],
            "rule vip-domain matched example.com: priority high"
        );
        assert!(
            t.reasons[1].contains("(kept priority high from an earlier rule)"),
            "{:?}",
            t.reasons
        );
    }

    /// Keywords match whole words only, in any case, across Unicode text.
    #[test]
    fn triage_keywords_are_whole_words() {
        assert!(contains_words("there is a bug here", "bug"));
        assert!(!contains_words("debugging session", "bug"));
        assert!(contains_words("ünïcode bug.", "bug"));
        assert!(contains_words("100% free!", "100% free"));
        assert!(!contains_words("", "x"));
    }
}
