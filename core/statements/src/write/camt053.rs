//! camt.053 written from statements, in version .001.02 or .001.08 (the namespace and the few
//! elements that differ: `Sts` and the related parties' names).

use std::fmt::Write;

use settle_domain::money::format_minor;
use settle_domain::reconcile::{StatedBalance, Statement};

use super::escape;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Camt053Version {
    V02,
    V08,
}

impl Camt053Version {
    pub fn namespace(self) -> &'static str {
        match self {
            Camt053Version::V02 => "urn:iso:std:iso:20022:tech:xsd:camt.053.001.02",
            Camt053Version::V08 => "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08",
        }
    }
}

fn balance(
    out: &mut String,
    code: &str,
    balance: &StatedBalance,
    currency: &str,
    exponent: settle_domain::money::Currency,
) {
    let indicator = if balance.amount_minor < 0 {
        "DBIT"
    } else {
        "CRDT"
    };
    let _ = write!(
        out,
        "<Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp><Amt Ccy=\"{currency}\">{}</Amt>\
         <CdtDbtInd>{indicator}</CdtDbtInd><Dt><Dt>{}</Dt></Dt></Bal>",
        format_minor(balance.amount_minor.abs(), exponent),
        balance.date
    );
}

/// One document holding every statement (all of them in the document's message).
pub fn camt053(statements: &[Statement], version: Camt053Version) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Document xmlns=\"{}\">\n<BkToCstmrStmt>\n\
         <GrpHdr><MsgId>SETTLE-{}</MsgId><CreDtTm>{}T00:00:00Z</CreDtTm></GrpHdr>\n",
        version.namespace(),
        statements
            .first()
            .map(|s| escape(&s.identity.sequence))
            .unwrap_or_default(),
        statements
            .first()
            .map(|s| s.identity.period_end.to_string())
            .unwrap_or_else(|| "2000-01-01".into()),
    );
    for s in statements {
        let currency = s.currency.code();
        let account = &s.identity.account;
        let account_id = if account.len() >= 15
            && account[..2].chars().all(|c| c.is_ascii_uppercase())
            && account.chars().all(|c| c.is_ascii_alphanumeric())
        {
            format!("<IBAN>{}</IBAN>", escape(account))
        } else {
            format!("<Othr><Id>{}</Id></Othr>", escape(account))
        };
        // ElctrncSeqNb is a number in the schema; a sequence that is not one is the Id alone.
        let sequence = &s.identity.sequence;
        let numbered = !sequence.is_empty()
            && sequence.len() <= 18
            && sequence.chars().all(|c| c.is_ascii_digit());
        let electronic = if numbered {
            format!("<ElctrncSeqNb>{sequence}</ElctrncSeqNb>")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "<Stmt><Id>{seq}</Id>{electronic}<CreDtTm>{end}T23:59:59Z</CreDtTm>\
             <FrToDt><FrDtTm>{start}T00:00:00Z</FrDtTm><ToDtTm>{end}T23:59:59Z</ToDtTm></FrToDt>\
             <Acct><Id>{account_id}</Id><Ccy>{currency}</Ccy></Acct>",
            seq = escape(&s.identity.sequence),
            start = s.identity.period_start,
            end = s.identity.period_end,
        );
        if let Some(b) = &s.opening_balance {
            balance(&mut out, "OPBD", b, currency, s.currency);
        }
        if let Some(b) = &s.closing_balance {
            balance(&mut out, "CLBD", b, currency, s.currency);
        }
        out.push('\n');
        for e in &s.entries {
            let indicator = if e.amount_minor < 0 { "DBIT" } else { "CRDT" };
            let status = match version {
                Camt053Version::V02 => "<Sts>BOOK</Sts>".to_string(),
                Camt053Version::V08 => "<Sts><Cd>BOOK</Cd></Sts>".to_string(),
            };
            let _ = write!(
                out,
                "<Ntry><Amt Ccy=\"{}\">{}</Amt><CdtDbtInd>{indicator}</CdtDbtInd>{}{status}\
                 <BookgDt><Dt>{}</Dt></BookgDt>",
                e.currency.code(),
                format_minor(e.amount_minor.abs(), e.currency),
                if e.reversal {
                    "<RvslInd>true</RvslInd>"
                } else {
                    ""
                },
                e.booking_date,
            );
            if let Some(value) = e.value_date {
                let _ = write!(out, "<ValDt><Dt>{value}</Dt></ValDt>");
            }
            if let Some(id) = &e.external_id {
                let _ = write!(out, "<AcctSvcrRef>{}</AcctSvcrRef>", escape(id));
            }
            out.push_str("<BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>ICDT</Cd><SubFmlyCd>ESCT</SubFmlyCd></Fmly></Domn></BkTxCd>");
            out.push_str("<NtryDtls><TxDtls>");
            let end_to_end = e
                .references
                .first()
                .map(String::as_str)
                .unwrap_or("NOTPROVIDED");
            let _ = write!(
                out,
                "<Refs><EndToEndId>{}</EndToEndId></Refs>",
                escape(end_to_end)
            );
            if let Some(party) = &e.counterparty {
                let role = if e.amount_minor < 0 { "Cdtr" } else { "Dbtr" };
                let name = match version {
                    Camt053Version::V02 => format!("<{role}><Nm>{}</Nm></{role}>", escape(party)),
                    Camt053Version::V08 => {
                        format!("<{role}><Pty><Nm>{}</Nm></Pty></{role}>", escape(party))
                    }
                };
                let _ = write!(out, "<RltdPties>{name}</RltdPties>");
            }
            let remittance: Vec<&str> = e.references.iter().skip(1).map(String::as_str).collect();
            if !remittance.is_empty() {
                let _ = write!(
                    out,
                    "<RmtInf><Ustrd>{}</Ustrd></RmtInf>",
                    escape(&remittance.join(" "))
                );
            }
            out.push_str("</TxDtls></NtryDtls>");
            if !e.description.is_empty() {
                let _ = write!(
                    out,
                    "<AddtlNtryInf>{}</AddtlNtryInf>",
                    escape(&e.description)
                );
            }
            out.push_str("</Ntry>\n");
        }
        out.push_str("</Stmt>\n");
    }
    out.push_str("</BkToCstmrStmt>\n</Document>\n");
    out
}
