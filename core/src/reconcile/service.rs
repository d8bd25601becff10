//! The reconciliation service, the one code path behind the CLI and the API: import statements, run
//! the rules, list items and exceptions, and record people's decisions (four eyes on large write-offs).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{Duration, NaiveDate};
use serde_json::json;
use uuid::Uuid;

use crate::calendar::BusinessCalendar;
use crate::model::{AuditAction, AuditEvent, AuditOutcome};
use crate::money::Currency;
use crate::reconcile::matcher;
use crate::reconcile::records::{records, MAX_RECORD_DAYS};
use crate::reconcile::settings::ReconciliationSettings;
use crate::reconcile::{
    item_states, BalanceError, Decision, DecisionAction, DecisionState, Item, ItemSide, OurRecord,
    Statement, StatementFormat, StatementKind, TheirEntry, WriteOffCategory, MANUAL_RULE,
};
use crate::store::{
    DecisionFilter, DecisionWrite, EntryFilter, ImportOutcome, SharedStore, StatementImport,
    StoreError, StoredEntry, StoredStatement,
};
use crate::time::Clock;

/// Why a reconciliation command did not happen; each says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("statement {statement}: {error}")]
    Unbalanced {
        statement: String,
        error: BalanceError,
    },
    #[error("the file holds no statement")]
    NoStatement,
    #[error("{0}")]
    File(#[from] settle_statements::StatementError),
    #[error("no CSV profile {0:?}: name one of `[reconciliation.profiles]` (configured: {1})")]
    UnknownProfile(String, String),
    #[error("no {side} item {id:?} in the {kind} reconciliation")]
    UnknownItem {
        kind: StatementKind,
        side: ItemSide,
        id: String,
    },
    #[error("no decision {0:?}")]
    UnknownDecision(String),
    #[error("{item} is already decided by {by}: unmatch that first")]
    ItemTaken { item: String, by: String },
    #[error("decision {0} is not open to that action")]
    NotOpen(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{actor} asked for write-off {decision} and cannot approve it: another admin must")]
    OwnWriteOff { actor: String, decision: String },
}

/// What importing one file did, statement by statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub statements: Vec<(StoredStatement, ImportOutcome)>,
}

impl ImportReport {
    pub fn entries_imported(&self) -> u32 {
        self.statements
            .iter()
            .filter(|(_, o)| *o == ImportOutcome::Imported)
            .map(|(s, _)| s.entry_count)
            .sum()
    }
}

/// What a run decided, per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    pub kinds: Vec<KindRun>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindRun {
    pub kind: StatementKind,
    pub matches: u32,
    pub matches_to_review: u32,
    pub duplicates: u32,
    /// Decided by someone else while this run computed: left to them.
    pub skipped: u32,
}

/// An item with the kind of reconciliation it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindItem {
    pub kind: StatementKind,
    pub item: Item,
}

/// Everything one kind's reconciliation reads.
struct Context {
    entries: Vec<StoredEntry>,
    ours: Vec<OurRecord>,
    decisions: Vec<Decision>,
    /// The first and last date the kind's statements cover.
    coverage: Option<(NaiveDate, NaiveDate)>,
}

/// A statement file to import, as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportFile {
    pub kind: StatementKind,
    pub bytes: Vec<u8>,
    /// Bank statements: the format, detected from the content when `None`.
    pub format: Option<StatementFormat>,
    /// Bank statements in CSV: the column profile's name.
    pub profile: Option<String>,
}

/// A person's expectation: the item is not due until `expected_by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectRequest {
    pub kind: StatementKind,
    pub side: ItemSide,
    pub id: String,
    pub expected_by: NaiveDate,
    pub reason: Option<String>,
}

/// A person's request to write items off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOffRequest {
    pub kind: StatementKind,
    pub ours: Vec<String>,
    pub theirs: Vec<String>,
    pub reason: String,
    pub category: WriteOffCategory,
}

#[derive(Clone)]
pub struct ReconciliationService {
    store: SharedStore,
    calendar: BusinessCalendar,
    clock: Arc<dyn Clock>,
    settings: ReconciliationSettings,
}

fn their_entry(e: &StoredEntry) -> TheirEntry {
    TheirEntry {
        id: e.id.clone(),
        amount_minor: e.entry.amount_minor,
        currency: e.entry.currency,
        booking_date: e.entry.booking_date,
        value_date: e.entry.value_date,
        references: e.entry.references.clone(),
        external_id: e.entry.external_id.clone(),
    }
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids.dedup();
    ids
}

impl ReconciliationService {
    pub fn new(
        store: SharedStore,
        calendar: BusinessCalendar,
        clock: Arc<dyn Clock>,
        settings: ReconciliationSettings,
    ) -> Self {
        ReconciliationService {
            store,
            calendar,
            clock,
            settings,
        }
    }

    pub(super) fn store(&self) -> &SharedStore {
        &self.store
    }

    pub(super) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn settings(&self) -> &ReconciliationSettings {
        &self.settings
    }

    pub(super) async fn audit(
        &self,
        actor: &str,
        action: AuditAction,
        subject: String,
        outcome: AuditOutcome,
        detail: serde_json::Value,
    ) -> Result<(), ReconcileError> {
        let event = AuditEvent::new(self.clock.now(), actor, action, subject, outcome, detail);
        self.store.record_audit(&event).await?;
        Ok(())
    }

    /// Stores the statements of one file (parsed, of one kind), all or nothing: each must balance
    /// (opening + entries = closing); one already stored adds nothing. Instants the file gives
    /// are mapped to business dates by the business calendar.
    pub async fn import(
        &self,
        statements: Vec<Statement>,
        file_sha256: &str,
        actor: &str,
    ) -> Result<ImportReport, ReconcileError> {
        if statements.is_empty() {
            return Err(ReconcileError::NoStatement);
        }
        let now = self.clock.now();
        let mut imports = Vec::with_capacity(statements.len());
        for mut statement in statements {
            let id = statement.identity.key();
            statement
                .check_balance()
                .map_err(|error| ReconcileError::Unbalanced {
                    statement: id.clone(),
                    error,
                })?;
            for entry in &mut statement.entries {
                if let Some(at) = entry.booked_at {
                    if let Ok(date) = self.calendar.date_of(at) {
                        entry.booking_date = date;
                    }
                }
            }
            let kind = statement.identity.kind;
            let entries: Vec<StoredEntry> = statement
                .entries
                .iter()
                .enumerate()
                .map(|(position, entry)| StoredEntry {
                    id: StoredEntry::id_of(&id, position as u32),
                    statement_id: id.clone(),
                    kind,
                    position: position as u32,
                    entry: entry.clone(),
                })
                .collect();
            imports.push(StatementImport {
                statement: StoredStatement {
                    id,
                    identity: statement.identity.clone(),
                    format: statement.format,
                    currency: statement.currency,
                    opening_balance_minor: statement.opening_balance.map(|b| b.amount_minor),
                    closing_balance_minor: statement.closing_balance.map(|b| b.amount_minor),
                    entry_count: entries.len() as u32,
                    file_sha256: file_sha256.to_string(),
                    imported_at: now,
                    imported_by: actor.to_string(),
                },
                entries,
            });
        }
        let stored: Vec<StoredStatement> = imports.iter().map(|i| i.statement.clone()).collect();
        let outcomes = self.store.import_statements(imports).await?;
        let report = ImportReport {
            statements: stored.into_iter().zip(outcomes).collect(),
        };
        let detail = json!({
            "file_sha256": file_sha256,
            "statements": report.statements.iter().map(|(s, o)| json!({
                "statement": s.id,
                "entries": s.entry_count,
                "outcome": if *o == ImportOutcome::Imported { "imported" } else { "already_imported" },
            })).collect::<Vec<_>>(),
        });
        self.audit(
            actor,
            AuditAction::ReconciliationImport,
            format!("file_sha256={file_sha256}"),
            AuditOutcome::Succeeded,
            detail,
        )
        .await?;
        Ok(report)
    }

    /// Reads a statement file (the parser of its kind and format) and imports what it holds:
    /// the one way in for the CLI, the API and the console.
    pub async fn import_file(
        &self,
        file: ImportFile,
        actor: &str,
    ) -> Result<ImportReport, ReconcileError> {
        let options = settle_statements::ParseOptions {
            business_timezone: self.calendar.timezone,
            account: None,
        };
        let statements = match file.kind {
            StatementKind::Payouts => {
                settle_statements::parse_payout_report(&file.bytes, &options)?
            }
            StatementKind::Provider => {
                settle_statements::parse_provider_report(&file.bytes, &options)?
            }
            StatementKind::Bank => {
                let profile = match &file.profile {
                    Some(name) => Some(self.settings.profiles.get(name).ok_or_else(|| {
                        let known: Vec<&str> =
                            self.settings.profiles.keys().map(String::as_str).collect();
                        ReconcileError::UnknownProfile(
                            name.clone(),
                            if known.is_empty() {
                                "none".into()
                            } else {
                                known.join(", ")
                            },
                        )
                    })?),
                    None => None,
                };
                let format = match (file.format, profile) {
                    (Some(format), _) => format,
                    (None, Some(_)) => StatementFormat::Csv,
                    (None, None) => settle_statements::detect_bank_format(&file.bytes).ok_or_else(|| {
                        ReconcileError::Invalid(
                            "the file is not camt.053, MT940 or OFX; a CSV statement needs --profile".into(),
                        )
                    })?,
                };
                settle_statements::parse_bank(format, &file.bytes, profile)?
            }
        };
        if let Some(other) = statements.iter().find(|s| s.identity.kind != file.kind) {
            return Err(ReconcileError::Invalid(format!(
                "the file holds a {} statement, not {}",
                other.identity.kind, file.kind
            )));
        }
        let sha256 = settle_statements::file_sha256(&file.bytes);
        self.import(statements, &sha256, actor).await
    }

    async fn context(&self, kind: StatementKind) -> Result<Context, ReconcileError> {
        let statements = self.store.statements(Some(kind)).await?;
        let coverage = statements
            .iter()
            .map(|s| (s.identity.period_start, s.identity.period_end))
            .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)));
        let decisions = self
            .store
            .decisions(&DecisionFilter {
                kind: Some(kind),
                states: vec![],
            })
            .await?;
        let Some((from, to)) = coverage else {
            return Ok(Context {
                entries: vec![],
                ours: vec![],
                decisions,
                coverage,
            });
        };
        let entries = self
            .store
            .statement_entries(&EntryFilter {
                kind,
                booked_from: None,
                booked_to: None,
            })
            .await?;
        let window = Duration::days(self.settings.expected_window_days() as i64);
        let days = (to - (from - window)).num_days();
        if days > MAX_RECORD_DAYS {
            return Err(ReconcileError::Invalid(format!(
                "a {kind} reconciliation covers at most {MAX_RECORD_DAYS} days; its statements \
                 (from {from}, less the rules' {}-day window, to {to}) span {days}",
                window.num_days()
            )));
        }
        let ours = records(&self.store, &self.calendar, kind, from - window, to).await?;
        Ok(Context {
            entries,
            ours,
            decisions,
            coverage,
        })
    }

    /// Runs the rules over what is open in each kind that has statements (or only `kind`):
    /// deterministic, and re-runnable — only open items are matched, and no decision is undone.
    /// With `date`, only records of ours of that business date and entries booked within the
    /// rules' widest window of it take part.
    pub async fn run(
        &self,
        kind: Option<StatementKind>,
        date: Option<NaiveDate>,
        actor: &str,
    ) -> Result<RunReport, ReconcileError> {
        let window = Duration::days(self.settings.expected_window_days() as i64);
        let kinds: Vec<StatementKind> = match kind {
            Some(kind) => vec![kind],
            None => StatementKind::ALL.to_vec(),
        };
        let mut report = RunReport::default();
        for kind in kinds {
            let context = self.context(kind).await?;
            if context.coverage.is_none() {
                continue;
            }
            let claimed: BTreeSet<String> = context
                .decisions
                .iter()
                .filter(|d| {
                    matches!(
                        d.state,
                        DecisionState::InForce | DecisionState::AwaitingApproval
                    )
                })
                .flat_map(|d| d.item_keys())
                .collect();
            let (open, settled): (Vec<TheirEntry>, Vec<TheirEntry>) = context
                .entries
                .iter()
                .map(their_entry)
                .partition(|t| !claimed.contains(&crate::reconcile::theirs_key(&t.id)));
            let open: Vec<TheirEntry> = open
                .into_iter()
                .filter(|t| {
                    date.is_none_or(|d| {
                        t.booking_date >= d - window && t.booking_date <= d + window
                    })
                })
                .collect();
            let ours: Vec<OurRecord> = context
                .ours
                .into_iter()
                .filter(|o| !claimed.contains(&crate::reconcile::ours_key(&o.id)))
                .filter(|o| date.is_none_or(|d| o.date == d))
                .collect();
            let outcome = matcher::run(&self.settings.rules, &ours, &open, &settled);
            let now = self.clock.now();
            let mut decisions = Vec::new();
            for m in outcome.matches {
                let (ours, theirs) = (sorted(m.ours), sorted(m.theirs));
                decisions.push(Decision {
                    id: Decision::rule_decision_id(
                        kind,
                        DecisionAction::Match,
                        &m.rule,
                        &ours,
                        &theirs,
                    ),
                    kind,
                    action: DecisionAction::Match,
                    state: DecisionState::InForce,
                    rule: m.rule,
                    ours,
                    theirs,
                    currency: Some(m.currency),
                    amount_minor: m.difference_minor,
                    needs_review: !m.within_tolerance,
                    target: None,
                    reason: None,
                    category: None,
                    expected_by: None,
                    actor: actor.to_string(),
                    decided_at: now,
                });
            }
            for d in outcome.duplicates {
                let theirs = vec![d.theirs];
                decisions.push(Decision {
                    id: Decision::rule_decision_id(
                        kind,
                        DecisionAction::Duplicate,
                        "duplicate",
                        &[],
                        &theirs,
                    ),
                    kind,
                    action: DecisionAction::Duplicate,
                    state: DecisionState::InForce,
                    rule: "duplicate".into(),
                    ours: vec![],
                    theirs,
                    currency: Some(d.currency),
                    amount_minor: 0,
                    needs_review: true,
                    target: None,
                    reason: Some(format!("repeats {}", d.of)),
                    category: None,
                    expected_by: None,
                    actor: actor.to_string(),
                    decided_at: now,
                });
            }
            let shapes: Vec<(DecisionAction, bool)> = decisions
                .iter()
                .map(|d| (d.action, d.needs_review))
                .collect();
            let writes = self.store.record_decisions(decisions).await?;
            let mut run = KindRun {
                kind,
                matches: 0,
                matches_to_review: 0,
                duplicates: 0,
                skipped: 0,
            };
            for ((action, needs_review), write) in shapes.into_iter().zip(&writes) {
                if !matches!(
                    write,
                    DecisionWrite::Recorded | DecisionWrite::AlreadyRecorded
                ) {
                    run.skipped += 1;
                } else if action == DecisionAction::Duplicate {
                    run.duplicates += 1;
                } else {
                    run.matches += 1;
                    run.matches_to_review += needs_review as u32;
                }
            }
            self.audit(
                actor,
                AuditAction::ReconciliationRun,
                match date {
                    Some(date) => format!("kind={kind} date={date}"),
                    None => format!("kind={kind}"),
                },
                AuditOutcome::Succeeded,
                json!({
                    "matches": run.matches,
                    "matches_to_review": run.matches_to_review,
                    "duplicates": run.duplicates,
                    "skipped": run.skipped,
                }),
            )
            .await?;
            report.kinds.push(run);
        }
        Ok(report)
    }

    /// Every item of `kind` the statements cover, with its state now: records of ours dated
    /// within the coverage (or matched), and every entry. Ages count from today's business date.
    pub async fn items(&self, kind: StatementKind) -> Result<Vec<KindItem>, ReconcileError> {
        let context = self.context(kind).await?;
        let Some((from, to)) = context.coverage else {
            return Ok(vec![]);
        };
        let theirs: Vec<TheirEntry> = context.entries.iter().map(their_entry).collect();
        let today = self.calendar.date_of(self.clock.now()).unwrap_or(to);
        let items = item_states(
            &context.ours,
            &theirs,
            &context.decisions,
            to,
            self.settings.expected_window_days(),
        );
        Ok(items
            .into_iter()
            .filter(|i| i.side == ItemSide::Theirs || i.date >= from || i.decision.is_some())
            .map(|mut item| {
                item.age_days = (today - item.date).num_days();
                KindItem { kind, item }
            })
            .collect())
    }

    /// The exceptions of every kind (or of `kind`), oldest first, open at least `min_age_days`.
    pub async fn exceptions(
        &self,
        kind: Option<StatementKind>,
        min_age_days: Option<i64>,
    ) -> Result<Vec<KindItem>, ReconcileError> {
        let kinds: Vec<StatementKind> = match kind {
            Some(kind) => vec![kind],
            None => StatementKind::ALL.to_vec(),
        };
        let mut out = Vec::new();
        // A decision to review is one exception, shown on its first item.
        let mut reviewed = BTreeSet::new();
        for kind in kinds {
            out.extend(
                self.items(kind)
                    .await?
                    .into_iter()
                    .filter(|i| i.item.is_exception())
                    .filter(|i| min_age_days.is_none_or(|age| i.item.age_days >= age))
                    .filter(|i| match (&i.item.decision, i.item.needs_review) {
                        (Some(decision), true) => reviewed.insert(decision.clone()),
                        _ => true,
                    }),
            );
        }
        out.sort_by(|a, b| {
            (a.item.date, a.kind, a.item.side, &a.item.id).cmp(&(
                b.item.date,
                b.kind,
                b.item.side,
                &b.item.id,
            ))
        });
        Ok(out)
    }

    /// The items named, each known to this kind's reconciliation, all in one currency; their sums.
    async fn selection(
        &self,
        kind: StatementKind,
        ours: &[String],
        theirs: &[String],
    ) -> Result<(Currency, i64, i64), ReconcileError> {
        if ours.is_empty() && theirs.is_empty() {
            return Err(ReconcileError::Invalid("name at least one item".into()));
        }
        let items = self.items(kind).await?;
        let index: HashMap<(ItemSide, &str), &Item> = items
            .iter()
            .map(|i| ((i.item.side, i.item.id.as_str()), &i.item))
            .collect();
        let mut currencies = BTreeSet::new();
        let mut sums = [0i64; 2];
        for (side, ids, sum) in [(ItemSide::Ours, ours, 0), (ItemSide::Theirs, theirs, 1)] {
            for id in ids {
                let item =
                    index
                        .get(&(side, id.as_str()))
                        .ok_or_else(|| ReconcileError::UnknownItem {
                            kind,
                            side,
                            id: id.clone(),
                        })?;
                currencies.insert(item.currency);
                sums[sum] = sums[sum].saturating_add(item.amount_minor);
            }
        }
        if currencies.len() > 1 {
            let codes: Vec<&str> = currencies.iter().map(|c| c.code()).collect();
            return Err(ReconcileError::Invalid(format!(
                "the items are in several currencies ({}): a match or write-off is in one",
                codes.join(", ")
            )));
        }
        Ok((
            *currencies.first().expect("one item at least"),
            sums[0],
            sums[1],
        ))
    }

    fn manual(
        &self,
        kind: StatementKind,
        action: DecisionAction,
        actor: &str,
        request_id: Option<&str>,
    ) -> Decision {
        Decision {
            id: request_id
                .map(str::to_string)
                .unwrap_or_else(|| format!("man-{}", Uuid::now_v7())),
            kind,
            action,
            state: DecisionState::InForce,
            rule: MANUAL_RULE.into(),
            ours: vec![],
            theirs: vec![],
            currency: None,
            amount_minor: 0,
            needs_review: false,
            target: None,
            reason: None,
            category: None,
            expected_by: None,
            actor: actor.to_string(),
            decided_at: self.clock.now(),
        }
    }

    async fn record(
        &self,
        decisions: Vec<Decision>,
        audit_action: AuditAction,
    ) -> Result<Decision, ReconcileError> {
        let last = decisions.last().cloned().expect("a decision");
        let writes = self.store.record_decisions(decisions).await?;
        let refused = writes.iter().find_map(|w| match w {
            DecisionWrite::Recorded | DecisionWrite::AlreadyRecorded => None,
            DecisionWrite::ItemTaken { item, by } => Some(ReconcileError::ItemTaken {
                item: item.clone(),
                by: by.clone(),
            }),
            DecisionWrite::TargetNotOpen { target } => {
                Some(ReconcileError::NotOpen(target.clone()))
            }
        });
        let (outcome, result) = match refused {
            Some(error) => (AuditOutcome::Refused, Err(error)),
            None => (AuditOutcome::Succeeded, Ok(())),
        };
        self.audit(
            &last.actor,
            audit_action,
            format!("kind={} decision={}", last.kind, last.id),
            outcome,
            json!({
                "target": last.target,
                "ours": last.ours,
                "theirs": last.theirs,
                "amount_minor": last.amount_minor,
                "reason": last.reason,
                "category": last.category.map(|c| c.as_str()),
                "expected_by": last.expected_by.map(|d| d.to_string()),
                "error": result.as_ref().err().map(|e| e.to_string()),
            }),
        )
        .await?;
        result?;
        Ok(self.store.decision(&last.id).await?.unwrap_or(last))
    }

    /// A person's match of records of ours with entries (one or more each side); the difference
    /// is recorded with it.
    pub async fn match_items(
        &self,
        kind: StatementKind,
        ours: Vec<String>,
        theirs: Vec<String>,
        reason: Option<String>,
        actor: &str,
        request_id: Option<&str>,
    ) -> Result<Decision, ReconcileError> {
        let (ours, theirs) = (sorted(ours), sorted(theirs));
        if ours.is_empty() || theirs.is_empty() {
            return Err(ReconcileError::Invalid(
                "a match needs at least one record of ours and one statement entry".into(),
            ));
        }
        let (currency, ours_sum, theirs_sum) = self.selection(kind, &ours, &theirs).await?;
        let decision = Decision {
            ours,
            theirs,
            currency: Some(currency),
            amount_minor: theirs_sum.saturating_sub(ours_sum),
            reason,
            ..self.manual(kind, DecisionAction::Match, actor, request_id)
        };
        self.record(vec![decision], AuditAction::ReconciliationMatch)
            .await
    }

    async fn target(&self, id: &str) -> Result<Decision, ReconcileError> {
        self.store
            .decision(id)
            .await?
            .ok_or_else(|| ReconcileError::UnknownDecision(id.to_string()))
    }

    /// Reverses a match, duplicate or write-off (its items are open again), by a new decision.
    pub async fn unmatch(
        &self,
        decision_id: &str,
        reason: String,
        actor: &str,
        request_id: Option<&str>,
    ) -> Result<Decision, ReconcileError> {
        let target = self.target(decision_id).await?;
        let decision = Decision {
            target: Some(target.id.clone()),
            reason: Some(reason),
            ..self.manual(target.kind, DecisionAction::Unmatch, actor, request_id)
        };
        self.record(vec![decision], AuditAction::ReconciliationUnmatch)
            .await
    }

    /// Confirms a rule's decision that needs review (a difference beyond tolerance, a duplicate):
    /// it is replaced by the same decision made by `actor`, with the reason.
    pub async fn confirm(
        &self,
        decision_id: &str,
        reason: String,
        actor: &str,
    ) -> Result<Decision, ReconcileError> {
        let target = self.target(decision_id).await?;
        if !target.needs_review || target.state != DecisionState::InForce {
            return Err(ReconcileError::NotOpen(target.id));
        }
        let unmatch = Decision {
            id: format!("{}-confirmed-unmatch", target.id),
            target: Some(target.id.clone()),
            reason: Some(reason.clone()),
            ..self.manual(target.kind, DecisionAction::Unmatch, actor, None)
        };
        let confirmed = Decision {
            id: format!("{}-confirmed", target.id),
            ours: target.ours.clone(),
            theirs: target.theirs.clone(),
            currency: target.currency,
            amount_minor: target.amount_minor,
            reason: Some(reason),
            ..self.manual(target.kind, target.action, actor, None)
        };
        self.record(vec![unmatch, confirmed], AuditAction::ReconciliationConfirm)
            .await
    }

    /// Marks an item as not due until its date.
    pub async fn expect(
        &self,
        request: ExpectRequest,
        actor: &str,
        request_id: Option<&str>,
    ) -> Result<Decision, ReconcileError> {
        let (ours, theirs) = match request.side {
            ItemSide::Ours => (vec![request.id], vec![]),
            ItemSide::Theirs => (vec![], vec![request.id]),
        };
        let (currency, _, _) = self.selection(request.kind, &ours, &theirs).await?;
        let decision = Decision {
            ours,
            theirs,
            currency: Some(currency),
            expected_by: Some(request.expected_by),
            reason: request.reason,
            ..self.manual(request.kind, DecisionAction::Expect, actor, request_id)
        };
        self.record(vec![decision], AuditAction::ReconciliationExpect)
            .await
    }

    /// Writes items off with a reason and category; above the approval amount it waits for a
    /// second person (`awaiting_approval`), its items set aside meanwhile.
    pub async fn write_off(
        &self,
        request: WriteOffRequest,
        actor: &str,
        request_id: Option<&str>,
    ) -> Result<Decision, ReconcileError> {
        if request.reason.trim().is_empty() {
            return Err(ReconcileError::Invalid("a write-off needs a reason".into()));
        }
        let (ours, theirs) = (sorted(request.ours), sorted(request.theirs));
        let (currency, ours_sum, theirs_sum) = self.selection(request.kind, &ours, &theirs).await?;
        let amount_minor = theirs_sum.saturating_sub(ours_sum);
        let state =
            if amount_minor.unsigned_abs() > self.settings.approval_above_minor.unsigned_abs() {
                DecisionState::AwaitingApproval
            } else {
                DecisionState::InForce
            };
        let decision = Decision {
            ours,
            theirs,
            currency: Some(currency),
            amount_minor,
            state,
            reason: Some(request.reason),
            category: Some(request.category),
            ..self.manual(request.kind, DecisionAction::WriteOff, actor, request_id)
        };
        self.record(vec![decision], AuditAction::ReconciliationWriteOff)
            .await
    }

    /// Approves (or rejects) a write-off that waits; never by the person who asked for it.
    pub async fn decide_write_off(
        &self,
        decision_id: &str,
        approve: bool,
        reason: Option<String>,
        actor: &str,
    ) -> Result<Decision, ReconcileError> {
        let target = self.target(decision_id).await?;
        if target.action != DecisionAction::WriteOff
            || target.state != DecisionState::AwaitingApproval
        {
            return Err(ReconcileError::NotOpen(target.id));
        }
        if approve && target.actor == actor {
            let error = ReconcileError::OwnWriteOff {
                actor: actor.to_string(),
                decision: target.id.clone(),
            };
            self.audit(
                actor,
                AuditAction::ReconciliationWriteOffApproved,
                format!("kind={} decision={}", target.kind, target.id),
                AuditOutcome::Refused,
                json!({ "target": target.id, "error": error.to_string() }),
            )
            .await?;
            return Err(error);
        }
        let (action, audit) = if approve {
            (
                DecisionAction::Approve,
                AuditAction::ReconciliationWriteOffApproved,
            )
        } else {
            (
                DecisionAction::Reject,
                AuditAction::ReconciliationWriteOffRejected,
            )
        };
        let decision = Decision {
            target: Some(target.id.clone()),
            reason,
            ..self.manual(target.kind, action, actor, None)
        };
        self.record(vec![decision], audit).await
    }

    /// Decisions of every kind (or of `kind`), oldest first.
    pub async fn decisions(
        &self,
        kind: Option<StatementKind>,
        states: Vec<DecisionState>,
    ) -> Result<Vec<Decision>, ReconcileError> {
        Ok(self
            .store
            .decisions(&DecisionFilter { kind, states })
            .await?)
    }
}
