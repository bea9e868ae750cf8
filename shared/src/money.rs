//! Money: an integer count of a currency's minor units (cents, fils, yen) and its ISO 4217
//! code. Never a float: amounts are decimal strings parsed digit by digit (`"1250.00"` EUR,
//! `"1250"` JPY, `"1.250"` KWD), so what the owner wrote is what is counted, exactly.
//!
//! The exponent of each currency (how many digits its minor unit has) comes from ISO 4217's
//! list of active codes; a code not in it is refused by name, never guessed.

use std::{fmt, str::FromStr};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Why an amount or a currency code was refused; each message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not three capital letters.
    #[error("{0:?} is not an ISO 4217 currency code: three capital letters, e.g. EUR")]
    NotACode(String),
    /// Three letters, but no active ISO 4217 currency.
    #[error(
        "{0} is not a currency aie knows (ISO 4217 active codes, e.g. EUR, USD, GBP, JPY, KWD)"
    )]
    UnknownCurrency(String),
    /// Not a plain decimal: a sign, an exponent, spaces, separators, no digits.
    #[error(
        "{amount:?} is not a decimal amount: write digits with at most one '.', e.g. \"1250.00\" (no sign, exponent, spaces or thousands separators)"
    )]
    Malformed {
        /// What was given.
        amount: String,
    },
    /// More decimal places than the currency has.
    #[error(
        "{amount:?} has more decimal places than {currency} has ({exponent}); write it in {currency}'s minor units, e.g. {example:?}"
    )]
    TooPrecise {
        /// What was given.
        amount: String,
        /// Its currency.
        currency: Currency,
        /// The currency's decimal places.
        exponent: u8,
        /// The same digits cut to the currency's precision, as a hint.
        example: String,
    },
    /// Fewer decimal places than the currency's, where exactly its precision is required.
    #[error(
        "{amount:?} must have exactly {exponent} decimal places for {currency}, e.g. {example:?}"
    )]
    NotExact {
        /// What was given.
        amount: String,
        /// Its currency.
        currency: Currency,
        /// The currency's decimal places.
        exponent: u8,
        /// The amount written at the currency's precision.
        example: String,
    },
    /// Too large to count in minor units.
    #[error("{amount:?} {currency} is too large")]
    Overflow {
        /// What was given (or the sum that overflowed).
        amount: String,
        /// Its currency.
        currency: Currency,
    },
    /// Two amounts of different currencies were added or compared.
    #[error("cannot combine {left} with {right}: different currencies")]
    Mixed {
        /// The first currency.
        left: Currency,
        /// The second.
        right: Currency,
    },
}

/// ISO 4217 active currencies with 0, 3 or 4 decimal places; every other known code has 2.
const EXPONENT_0: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
    "VUV", "XAF", "XOF", "XPF",
];
const EXPONENT_3: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
const EXPONENT_4: &[&str] = &["CLF", "UYW"];
/// ISO 4217 active currencies with 2 decimal places.
const EXPONENT_2: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN",
    "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHE",
    "CHF", "CHW", "CNY", "COP", "COU", "CRC", "CUP", "CVE", "CZK", "DKK", "DOP", "DZD", "EGP",
    "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GTQ", "GYD", "HKD",
    "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IRR", "JMD", "KES", "KGS", "KHR", "KPW", "KYD",
    "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP",
    "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR",
    "NZD", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "QAR", "RON", "RSD", "RUB", "SAR", "SBD",
    "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL",
    "THB", "TJS", "TMT", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "USD", "USN", "UYU", "UZS",
    "VED", "VES", "WST", "XCD", "YER", "ZAR", "ZMW", "ZWG",
];

/// The decimal places of ISO 4217 currency `code`, if aie knows it.
pub fn exponent(code: &str) -> Option<u8> {
    [
        (EXPONENT_0, 0),
        (EXPONENT_2, 2),
        (EXPONENT_3, 3),
        (EXPONENT_4, 4),
    ]
    .into_iter()
    .find(|(codes, _)| codes.contains(&code))
    .map(|(_, exponent)| exponent)
}

/// A known ISO 4217 currency: its code and how many decimal places its minor unit has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

impl Currency {
    /// The currency `code` (exactly three capital letters, a known code).
    pub fn new(code: &str) -> Result<Self, MoneyError> {
        let bytes: [u8; 3] = code
            .as_bytes()
            .try_into()
            .ok()
            .filter(|b: &[u8; 3]| b.iter().all(u8::is_ascii_uppercase))
            .ok_or_else(|| MoneyError::NotACode(code.to_owned()))?;
        let exponent =
            exponent(code).ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))?;
        Ok(Self {
            code: bytes,
            exponent,
        })
    }

    /// Its code, e.g. `EUR`.
    pub fn code(&self) -> &str {
        // Three ASCII capitals, checked in `new`.
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// Its decimal places: 2 for EUR, 0 for JPY, 3 for KWD.
    pub fn exponent(&self) -> u8 {
        self.exponent
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Self::new(code)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Currency::new(&code).map_err(de::Error::custom)
    }
}

/// An amount of one currency, in whole minor units (`1250.00` EUR is 125000 cents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

impl Money {
    /// `minor` minor units of `currency`.
    pub fn from_minor(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    /// Nothing, in `currency`.
    pub fn zero(currency: Currency) -> Self {
        Self::from_minor(0, currency)
    }

    /// Parses the decimal `amount` of `currency`, with at most the currency's decimal places
    /// (`"500"`, `"500.5"` and `"500.50"` EUR are all 50000 cents; `"500.505"` is refused).
    pub fn parse(amount: &str, currency: Currency) -> Result<Self, MoneyError> {
        Self::parse_digits(amount, currency, false)
    }

    /// Parses `amount` written at exactly the currency's precision, as the contract requires
    /// of a payment's amount (`"1250.00"` EUR, `"1250"` JPY, `"1.250"` KWD).
    pub fn parse_exact(amount: &str, currency: Currency) -> Result<Self, MoneyError> {
        Self::parse_digits(amount, currency, true)
    }

    fn parse_digits(amount: &str, currency: Currency, exact: bool) -> Result<Self, MoneyError> {
        let malformed = || MoneyError::Malformed {
            amount: amount.to_owned(),
        };
        let (whole, fraction) = match amount.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (amount, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
            return Err(malformed());
        }
        let fraction = fraction.unwrap_or("");
        let places = usize::from(currency.exponent);
        let example = |cut: &str| {
            let mut padded: String = cut.chars().take(places).collect();
            while padded.len() < places {
                padded.push('0');
            }
            if places == 0 {
                whole.to_owned()
            } else {
                format!("{whole}.{padded}")
            }
        };
        if fraction.len() > places {
            return Err(MoneyError::TooPrecise {
                amount: amount.to_owned(),
                currency,
                exponent: currency.exponent,
                example: example(fraction),
            });
        }
        if exact && fraction.len() != places {
            return Err(MoneyError::NotExact {
                amount: amount.to_owned(),
                currency,
                exponent: currency.exponent,
                example: example(fraction),
            });
        }
        let overflow = || MoneyError::Overflow {
            amount: amount.to_owned(),
            currency,
        };
        let mut minor: i64 = 0;
        let padding = places - fraction.len();
        let all = whole
            .bytes()
            .chain(fraction.bytes())
            .chain(std::iter::repeat_n(b'0', padding));
        for digit in all {
            minor = minor
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(digit - b'0')))
                .ok_or_else(overflow)?;
        }
        Ok(Self { minor, currency })
    }

    /// The amount in minor units.
    pub fn minor(&self) -> i64 {
        self.minor
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The sum of two amounts of one currency.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::Mixed {
                left: self.currency,
                right: other.currency,
            });
        }
        self.minor
            .checked_add(other.minor)
            .map(|minor| Money::from_minor(minor, self.currency))
            .ok_or_else(|| MoneyError::Overflow {
                amount: format!("{} + {}", self.amount(), other.amount()),
                currency: self.currency,
            })
    }

    /// The amount as a decimal string at the currency's precision, without the code:
    /// `"1250.00"`, `"1250"`, `"1.250"`.
    pub fn amount(&self) -> String {
        let places = usize::from(self.currency.exponent);
        let sign = if self.minor < 0 { "-" } else { "" };
        let digits = self.minor.unsigned_abs().to_string();
        if places == 0 {
            return format!("{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = places + 1);
        let (whole, fraction) = padded.split_at(padded.len() - places);
        format!("{sign}{whole}.{fraction}")
    }
}

impl fmt::Display for Money {
    /// `1250.00 EUR`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount(), self.currency)
    }
}

/// How a [`Money`] is written in JSON: the decimal string and the code, never a float.
#[derive(Serialize, Deserialize, JsonSchema)]
struct MoneyJson {
    /// The amount as a decimal string at the currency's precision, e.g. `"1250.00"`.
    amount: String,
    /// The ISO 4217 code, e.g. `EUR`.
    currency: String,
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        MoneyJson {
            amount: self.amount(),
            currency: self.currency.code().to_owned(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = MoneyJson::deserialize(d)?;
        let currency = Currency::new(&raw.currency).map_err(de::Error::custom)?;
        Money::parse(&raw.amount, currency).map_err(de::Error::custom)
    }
}

impl JsonSchema for Money {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Money".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        MoneyJson::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(code: &str) -> Currency {
        Currency::new(code).expect("known")
    }

    /// The contract's examples parse exactly, by each currency's exponent, and print back.
    #[test]
    fn amounts_parse_exactly_in_minor_units() {
        let eur = Money::parse_exact("1250.00", cur("EUR")).expect("eur");
        assert_eq!(
            (eur.minor(), eur.to_string().as_str()),
            (125_000, "1250.00 EUR")
        );
        let jpy = Money::parse_exact("1250", cur("JPY")).expect("jpy");
        assert_eq!((jpy.minor(), jpy.amount().as_str()), (1250, "1250"));
        let kwd = Money::parse_exact("1.250", cur("KWD")).expect("kwd");
        assert_eq!((kwd.minor(), kwd.amount().as_str()), (1250, "1.250"));
        assert_eq!(cur("GBP").exponent(), 2);
        assert_eq!(cur("USD").exponent(), 2);
        // 0.1 + 0.2 is 0.3 here: no float on the way.
        let sum = Money::parse("0.1", cur("EUR"))
            .and_then(|a| a.checked_add(Money::parse("0.2", cur("EUR"))?))
            .expect("sum");
        assert_eq!(sum, Money::parse_exact("0.30", cur("EUR")).expect("0.30"));
        assert_eq!(
            Money::parse("500", cur("EUR")).expect("500").minor(),
            50_000
        );
        assert_eq!(Money::from_minor(5, cur("EUR")).amount(), "0.05");
    }

    /// Anything but a plain decimal at the currency's precision is refused, saying why.
    #[test]
    fn amounts_refuse_floats_signs_and_extra_places() {
        let eur = cur("EUR");
        for bad in [
            "", ".5", "5.", "-1.00", "+1", "1e3", "1 000", "1,000.00", "0x10", "NaN",
        ] {
            let err = Money::parse(bad, eur).expect_err(bad);
            assert!(matches!(err, MoneyError::Malformed { .. }), "{bad}: {err}");
        }
        let err = Money::parse("1.005", eur).expect_err("too precise");
        assert!(err.to_string().contains("\"1.00\""), "{err}");
        let err = Money::parse("1250.5", cur("JPY")).expect_err("yen has no cents");
        assert!(err.to_string().contains("JPY"), "{err}");
        assert!(matches!(
            Money::parse_exact("1250", eur),
            Err(MoneyError::NotExact { .. })
        ));
        assert!(matches!(
            Money::parse("99999999999999999999", eur),
            Err(MoneyError::Overflow { .. })
        ));
        let mixed = Money::zero(eur).checked_add(Money::zero(cur("USD")));
        assert!(matches!(mixed, Err(MoneyError::Mixed { .. })));
    }

    /// A code that is not three capitals, or not a known currency, is refused by name.
    #[test]
    fn unknown_currencies_are_refused_clearly() {
        assert!(matches!(Currency::new("eur"), Err(MoneyError::NotACode(_))));
        assert!(matches!(
            Currency::new("EURO"),
            Err(MoneyError::NotACode(_))
        ));
        let err = Currency::new("XYZ").expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "XYZ is not a currency aie knows (ISO 4217 active codes, e.g. EUR, USD, GBP, JPY, KWD)"
        );
    }

    /// JSON carries the decimal string and the code, and reads back the same amount.
    #[test]
    fn money_round_trips_through_json_as_strings() {
        let kwd = Money::parse_exact("1.250", cur("KWD")).expect("kwd");
        let json = serde_json::to_value(kwd).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"amount": "1.250", "currency": "KWD"})
        );
        assert_eq!(serde_json::from_value::<Money>(json).expect("back"), kwd);
        let float = serde_json::json!({"amount": 1.25, "currency": "KWD"});
        assert!(serde_json::from_value::<Money>(float).is_err());
    }
}
