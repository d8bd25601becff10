//! OFX written from statements: 1.02 SGML (leaf tags unclosed) or 2.11 XML, one STMTTRNRS per
//! statement, each entry an STMTTRN, the closing balance as LEDGERBAL.

use std::fmt::Write;

use settle_domain::money::format_minor;
use settle_domain::reconcile::Statement;

use super::escape;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfxVersion {
    Sgml1,
    Xml2,
}

/// The statements as one OFX file.
pub fn ofx(statements: &[Statement], version: OfxVersion) -> String {
    let xml = version == OfxVersion::Xml2;
    let leaf = |name: &str, value: &str| {
        if xml {
            format!("<{name}>{}</{name}>\n", escape(value))
        } else {
            format!("<{name}>{}\n", escape(value))
        }
    };
    let mut out = String::new();
    if xml {
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<?OFX OFXHEADER=\"200\" VERSION=\"211\" SECURITY=\"NONE\" OLDFILEUID=\"NONE\" NEWFILEUID=\"NONE\"?>\n");
    } else {
        out.push_str("OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\nSECURITY:NONE\nENCODING:USASCII\nCHARSET:1252\nCOMPRESSION:NONE\nOLDFILEUID:NONE\nNEWFILEUID:NONE\n\n");
    }
    out.push_str("<OFX>\n<BANKMSGSRSV1>\n");
    for s in statements {
        let _ = write!(
            out,
            "<STMTTRNRS>\n{}<STATUS>\n{}{}</STATUS>\n<STMTRS>\n",
            leaf("TRNUID", &s.identity.sequence),
            leaf("CODE", "0"),
            leaf("SEVERITY", "INFO")
        );
        out.push_str(&leaf("CURDEF", s.currency.code()));
        let _ = write!(
            out,
            "<BANKACCTFROM>\n{}{}{}</BANKACCTFROM>\n",
            leaf("BANKID", "0"),
            leaf("ACCTID", &s.identity.account),
            leaf("ACCTTYPE", "CHECKING")
        );
        let _ = write!(
            out,
            "<BANKTRANLIST>\n{}{}",
            leaf(
                "DTSTART",
                &s.identity.period_start.format("%Y%m%d").to_string()
            ),
            leaf("DTEND", &s.identity.period_end.format("%Y%m%d").to_string())
        );
        for e in &s.entries {
            out.push_str("<STMTTRN>\n");
            out.push_str(&leaf(
                "TRNTYPE",
                if e.amount_minor < 0 {
                    "DEBIT"
                } else {
                    "CREDIT"
                },
            ));
            out.push_str(&leaf(
                "DTPOSTED",
                &e.booking_date
                    .format("%Y%m%d120000.000[+3:AST]")
                    .to_string(),
            ));
            if let Some(value) = e.value_date {
                out.push_str(&leaf("DTUSER", &value.format("%Y%m%d").to_string()));
            }
            out.push_str(&leaf("TRNAMT", &format_minor(e.amount_minor, e.currency)));
            if let Some(id) = &e.external_id {
                out.push_str(&leaf("FITID", id));
            }
            if let Some(reference) = e.references.first() {
                out.push_str(&leaf("REFNUM", reference));
            }
            if let Some(name) = &e.counterparty {
                out.push_str(&leaf("NAME", name));
            }
            if !e.description.is_empty() {
                out.push_str(&leaf("MEMO", &e.description));
            }
            out.push_str("</STMTTRN>\n");
        }
        out.push_str("</BANKTRANLIST>\n");
        if let Some(b) = &s.closing_balance {
            let _ = write!(
                out,
                "<LEDGERBAL>\n{}{}</LEDGERBAL>\n",
                leaf("BALAMT", &format_minor(b.amount_minor, s.currency)),
                leaf("DTASOF", &b.date.format("%Y%m%d").to_string())
            );
        }
        out.push_str("</STMTRS>\n</STMTTRNRS>\n");
    }
    out.push_str("</BANKMSGSRSV1>\n</OFX>\n");
    out
}
