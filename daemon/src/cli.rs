//! The command-line grammar (clap): global options and one subcommand per task.
//! Parsing only; what each command does lives in `commands/`.

use std::path::PathBuf;

use chrono::NaiveDate;
use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand};
use settle_core::config::StoreKind;
use settle_core::reconcile::{StatementKind, WriteOffCategory};

#[derive(Debug, Parser)]
#[command(
    name = "settle",
    version,
    about = "Settle a marketplace's business days, exactly once."
)]
pub struct Cli {
    /// Configuration file (TOML). Without one, the defaults apply.
    #[arg(long, global = true, env = "SETTLE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Where the embedded store lives (default: the platform's data directory).
    #[arg(long, global = true, env = "SETTLE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The store: sqlite (embedded, the default) or mongodb (shared). Overrides `[store] kind`;
    /// --mongo-uri alone implies mongodb.
    #[arg(
        long = "store",
        global = true,
        env = "SETTLE_STORE",
        value_name = "KIND",
        value_parser = clap::builder::PossibleValuesParser::new(["sqlite", "mongodb"])
            .map(|kind| kind.parse::<StoreKind>().expect("a listed store kind")),
    )]
    pub store: Option<StoreKind>,

    /// The MongoDB connection string (overrides `[store] uri`). Its password may instead come
    /// from SETTLE_MONGO_PASSWORD or the systemd credential mongo-password; it is never printed.
    #[arg(
        long,
        global = true,
        env = "SETTLE_MONGO_URI",
        value_name = "URI",
        hide_env_values = true
    )]
    pub mongo_uri: Option<String>,

    /// The MongoDB database (overrides `[store] database`; default: settle).
    #[arg(long, global = true, env = "SETTLE_MONGO_DB", value_name = "NAME")]
    pub mongo_db: Option<String>,

    /// More log output on stderr (-v info, -vv debug); `SETTLE_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a reproducible month of transactions, settle every day, export and chart the result.
    Demo(DemoArgs),
    /// Import a transactions CSV (all or nothing unless --skip-invalid).
    Import(ImportArgs),
    /// Settle a business date.
    Run(DateArgs),
    /// Settle a date again as a new revision, for a stated reason.
    Rerun(RerunArgs),
    /// Resume a failed settlement.
    Retry(DateArgs),
    /// Show a settlement: status, totals, lines and late transactions.
    Show(ShowArgs),
    /// List settlements, newest first.
    History(HistoryArgs),
    /// Export a settlement's lines as CSV.
    Export(ExportArgs),
    /// Chart daily gross, fees and net per currency (PNG or SVG).
    Chart(ChartArgs),
    /// Record a payment, refund, chargeback or adjustment (idempotent by key).
    #[command(subcommand)]
    Payment(PaymentCommand),
    /// Hold or release a merchant's payouts; list holds and amounts carried forward.
    #[command(subcommand)]
    Merchant(MerchantCommand),
    /// Ask the provider about sent payouts (and ones failed over a day ago) and record what it says.
    #[command(subcommand)]
    Payouts(PayoutsCommand),
    /// Create, list and revoke API tokens (each shown once; the store keeps only its SHA-256).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Reconcile statements (bank, payout report, provider report) with Settle's payouts and
    /// payments: import, match by rules, and work the exceptions.
    #[command(subcommand)]
    Reconcile(ReconcileCommand),
    /// Copy a whole SQLite store into MongoDB (safe to run again; an interrupted copy resumes).
    Migrate(MigrateArgs),
    /// Install, remove or inspect the system service that runs `settle serve` (systemd on Linux,
    /// the Service Control Manager on Windows).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Run the daemon: the HTTP API and the nightly scheduler, until SIGTERM.
    Serve(ServeArgs),
    /// Check the configuration and report every problem.
    CheckConfig,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The source: `sqlite:PATH` (the SQLite database file).
    #[arg(long, value_name = "sqlite:PATH")]
    pub from: String,
    /// The target MongoDB URI (its password may come from SETTLE_MONGO_PASSWORD instead).
    #[arg(long, value_name = "mongodb://…")]
    pub to: String,
    /// The target database (default: settle).
    #[arg(long, default_value = "settle", value_name = "NAME")]
    pub to_db: String,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Install and start the service.
    ///
    /// Linux: write settle.service into the unit directory, create the user settle, then
    /// `systemctl daemon-reload` and `systemctl enable --now settle` (without systemd running, the
    /// unit is written and the commands are printed). The global --config is the file the service
    /// reads (default /etc/settle/settle.toml); it need not exist yet. Windows: register and start
    /// the Windows service settle.
    Install {
        /// Where the systemd unit file goes (Linux).
        #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
        /// The settle executable the service runs (default: this one).
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// Only write (register) the service: create no user, enable and start nothing.
        #[arg(long)]
        no_start: bool,
    },
    /// Stop, disable and remove the service (its data and user are kept).
    Uninstall {
        /// Where the systemd unit file is (Linux).
        #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
    },
    /// Show the service's state (Linux: `systemctl status settle`, with its exit status).
    Status,
    /// The Windows service's entry point, started by the Service Control Manager.
    #[command(hide = true)]
    Run,
}

#[derive(Debug, Subcommand)]
pub enum PayoutsCommand {
    /// Look up sent payouts at the provider (`confirmed` once paid), and recheck payouts failed
    /// more than a day ago: one the provider reports paid or accepted after all is believed
    /// (`confirmed` / `sent`, audited as `payout.recheck`).
    Check(PayoutsCheckArgs),
}

#[derive(Debug, Args)]
pub struct PayoutsCheckArgs {
    /// Only this business date's payouts (YYYY-MM-DD); every date's without it.
    #[arg(long, value_parser = parse_date)]
    pub date: Option<NaiveDate>,
}

/// Which reconciliation: `bank`, `payouts` or `provider`.
fn parse_kind(value: &str) -> Result<StatementKind, String> {
    value.parse()
}

fn parse_category(value: &str) -> Result<WriteOffCategory, String> {
    value.parse()
}

/// An age such as `3d` (days) or `3`.
fn parse_age_days(value: &str) -> Result<i64, String> {
    let digits = value.strip_suffix('d').unwrap_or(value);
    digits
        .parse::<i64>()
        .ok()
        .filter(|days| *days >= 0)
        .ok_or_else(|| format!("{value:?} is not an age in days such as 3d"))
}

#[derive(Debug, Subcommand)]
pub enum ReconcileCommand {
    /// Import a statement file, all or nothing; a statement already imported adds nothing.
    Import(ReconcileImportArgs),
    /// Match what is open by the configured rules (deterministic; never undoes a decision).
    Run {
        /// Only this kind (default: every kind with statements).
        #[arg(long, value_parser = parse_kind)]
        kind: Option<StatementKind>,
        /// Only records of this business date (and entries within the rules' window of it).
        #[arg(long, value_parser = parse_date)]
        date: Option<NaiveDate>,
    },
    /// Show the items of a business date with their status, and the date's summary.
    Show {
        #[arg(long, value_parser = parse_date)]
        date: NaiveDate,
        #[arg(long, value_parser = parse_kind)]
        kind: Option<StatementKind>,
    },
    /// List the open exceptions, oldest first.
    Exceptions {
        /// Only exceptions open at least this long, e.g. 3d.
        #[arg(long, value_parser = parse_age_days, value_name = "AGE")]
        older_than: Option<i64>,
        #[arg(long, value_parser = parse_kind)]
        kind: Option<StatementKind>,
    },
    /// Match records of ours with statement entries by hand (one or more each side).
    Match {
        #[arg(long, value_parser = parse_kind)]
        kind: StatementKind,
        /// A record of ours (payout reference or transaction id); repeat for several.
        #[arg(long = "ours", required = true)]
        ours: Vec<String>,
        /// A statement entry id; repeat for several.
        #[arg(long = "theirs", required = true)]
        theirs: Vec<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Undo a match, duplicate or write-off (a new decision; nothing is edited).
    Unmatch {
        decision: String,
        #[arg(long)]
        reason: String,
    },
    /// Confirm a rule's decision that needs review (a difference beyond tolerance, a duplicate).
    Confirm {
        decision: String,
        #[arg(long)]
        reason: String,
    },
    /// Mark an item as not due until a date.
    Expect {
        #[arg(long, value_parser = parse_kind)]
        kind: StatementKind,
        #[arg(long, conflicts_with = "theirs", required_unless_present = "theirs")]
        ours: Option<String>,
        #[arg(long)]
        theirs: Option<String>,
        #[arg(long, value_parser = parse_date)]
        until: NaiveDate,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Write items off with a reason and category; above the configured amount a second admin
    /// must approve.
    WriteOff {
        #[arg(long, value_parser = parse_kind)]
        kind: StatementKind,
        #[arg(long = "ours")]
        ours: Vec<String>,
        #[arg(long = "theirs")]
        theirs: Vec<String>,
        #[arg(long)]
        reason: String,
        /// bank_fee, provider_fee, rounding, fx_difference, unrecoverable or other.
        #[arg(long, value_parser = parse_category)]
        category: WriteOffCategory,
    },
    /// Approve a write-off that waits (not by the person who asked for it).
    Approve { decision: String },
    /// Reject a write-off that waits; its items are open again.
    Reject {
        decision: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Turn a write-off or a confirmed difference into an adjustment on the merchant, through the
    /// payment service: the next settlement pays (or collects) it. Once per decision.
    Adjust {
        decision: String,
        /// Signed, in major units: negative is a debit to the merchant (e.g. -1.05); at most the
        /// decision's amount.
        #[arg(long, allow_hyphen_values = true)]
        amount: String,
        #[arg(long)]
        reason: String,
        /// The merchant, when the decision's records do not name exactly one.
        #[arg(long)]
        merchant: Option<String>,
    },
    /// Write the report of a range of business dates as CSV.
    Report {
        #[arg(long, value_parser = parse_date)]
        from: NaiveDate,
        #[arg(long, value_parser = parse_date)]
        to: NaiveDate,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ReconcileImportArgs {
    pub file: PathBuf,
    #[arg(long, value_parser = parse_kind)]
    pub kind: StatementKind,
    /// bank only: the CSV column profile (`[reconciliation.profiles.NAME]`).
    #[arg(long)]
    pub profile: Option<String>,
    /// bank only: camt053, mt940, ofx or csv (default: detected from the content; csv with --profile).
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PaymentCommand {
    /// Record a payment.
    Record(RecordPaymentArgs),
    /// Refund (part of) a payment.
    Refund(ReturnArgs),
    /// Record a chargeback of (part of) a payment.
    Chargeback(ReturnArgs),
    /// Credit (positive) or debit (negative) a merchant.
    Adjust(AdjustArgs),
}

/// The key that makes a command safe to repeat. Without one a fresh key is made and printed:
/// pass it again to retry without recording twice.
#[derive(Debug, Args)]
pub struct KeyArgs {
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct RecordPaymentArgs {
    #[arg(long)]
    pub merchant: String,
    /// Major units as a decimal string, e.g. 12.50.
    #[arg(long)]
    pub amount: String,
    #[arg(long)]
    pub currency: String,
    /// card, wallet, cash, bank_transfer or other.
    #[arg(long)]
    pub method: String,
    #[arg(long)]
    pub external_ref: String,
    /// RFC 3339 with an offset, e.g. 2026-11-23T14:30:00+03:00.
    #[arg(long)]
    pub occurred_at: String,
    /// completed (default), pending, failed or cancelled.
    #[arg(long)]
    pub status: Option<String>,
    #[command(flatten)]
    pub key: KeyArgs,
}

#[derive(Debug, Args)]
pub struct ReturnArgs {
    /// The id of the payment returned.
    #[arg(long)]
    pub payment: uuid::Uuid,
    #[arg(long)]
    pub amount: String,
    #[arg(long)]
    pub external_ref: String,
    #[arg(long)]
    pub occurred_at: String,
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub key: KeyArgs,
}

#[derive(Debug, Args)]
pub struct AdjustArgs {
    #[arg(long)]
    pub merchant: String,
    /// Negative for a debit, e.g. -3.00.
    #[arg(long, allow_hyphen_values = true)]
    pub amount: String,
    #[arg(long)]
    pub currency: String,
    #[arg(long)]
    pub external_ref: String,
    #[arg(long)]
    pub occurred_at: String,
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub key: KeyArgs,
}

#[derive(Debug, Subcommand)]
pub enum MerchantCommand {
    /// Hold a merchant's payouts (they wait until released).
    Hold {
        merchant_id: String,
        #[arg(long)]
        reason: String,
    },
    /// Release a hold and send the payouts that waited.
    Release { merchant_id: String },
    /// List holds and amounts carried forward.
    List,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a new API token; it is printed once, alone on the last line.
    Create {
        /// Unique name of the token: 1 to 64 letters, digits, '.', '_' or '-'.
        #[arg(long)]
        name: String,
        /// viewer, operator or admin.
        #[arg(long)]
        role: String,
    },
    /// List tokens (never the tokens themselves or their hashes).
    List,
    /// Revoke a token: it stops working at once; its name stays taken.
    Revoke { name: String },
}

/// A settlement date, `YYYY-MM-DD`.
fn parse_date(value: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .filter(|date| date.format("%Y-%m-%d").to_string() == value)
        .ok_or_else(|| format!("{value:?} is not a date of the form YYYY-MM-DD"))
}

#[derive(Debug, Args)]
pub struct DateArgs {
    /// The business date (YYYY-MM-DD, in the business timezone).
    #[arg(long, value_parser = parse_date)]
    pub date: NaiveDate,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the CSV export and the chart are written; the demo's SQLite store lives in DIR/data
    /// unless --data-dir is given (with --store mongodb it uses the given database).
    #[arg(long, default_value = "settle-demo", value_name = "DIR")]
    pub out_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The CSV file.
    pub file: PathBuf,
    /// Import the valid rows and write the invalid ones to FILE.rejects.csv.
    #[arg(long)]
    pub skip_invalid: bool,
}

#[derive(Debug, Args)]
pub struct RerunArgs {
    #[arg(long, value_parser = parse_date)]
    pub date: NaiveDate,
    /// Why the date is settled again (kept with the revision and in the audit trail).
    #[arg(long)]
    pub reason: String,
    /// Use the fee schedule configured now instead of the one stored with the previous revision.
    #[arg(long)]
    pub apply_current_fees: bool,
    /// Rerun although `server.require_rerun_approval` asks for a second operator's approval (an
    /// admin's explicit choice, audited with the reason).
    #[arg(long)]
    pub without_approval: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[arg(long, value_parser = parse_date)]
    pub date: NaiveDate,
    /// A revision (default: the latest).
    #[arg(long)]
    pub revision: Option<u32>,
    /// Show at most N merchant lines (default: all).
    #[arg(long, value_name = "N")]
    pub lines: Option<usize>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[arg(long, value_parser = parse_date)]
    pub from: Option<NaiveDate>,
    #[arg(long, value_parser = parse_date)]
    pub to: Option<NaiveDate>,
    /// pending, running, completed or failed.
    #[arg(long)]
    pub status: Option<String>,
    /// List every revision, not only the latest of each date.
    #[arg(long)]
    pub all_revisions: bool,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(long, value_parser = parse_date)]
    pub date: NaiveDate,
    /// A revision (default: the latest completed one).
    #[arg(long)]
    pub revision: Option<u32>,
    /// Output file (default: standard output).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Start with a UTF-8 byte order mark, for Excel.
    #[arg(long)]
    pub bom: bool,
}

#[derive(Debug, Args)]
pub struct ChartArgs {
    #[arg(long, value_parser = parse_date)]
    pub from: NaiveDate,
    #[arg(long, value_parser = parse_date)]
    pub to: NaiveDate,
    /// Output file; the extension (.png or .svg) chooses the format.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1200)]
    pub width: u32,
    #[arg(long, default_value_t = 800)]
    pub height: u32,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default: `[server] listen`, else 127.0.0.1:8787; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_must_be_iso_calendar_dates() {
        assert_eq!(parse_date("2024-02-29").unwrap().to_string(), "2024-02-29");
        for bad in [
            "2023-02-29",
            "2024-2-1",
            "24-02-01",
            "2024/02/01",
            "today",
            "",
        ] {
            let error = parse_date(bad).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
    }

    #[test]
    fn the_grammar_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
