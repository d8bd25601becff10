//! The commands the UI may invoke (each granted in `capabilities/`): thin wrappers that turn the
//! UI's strings into typed values and call the `Console` session. None ever returns the token.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use settle_client::{
    HistoryQuery, LineSort, LinesPage, LinesQuery, Page, RerunOutcome, RunAccepted, Settlement,
    SettlementStatus, SortOrder,
};
use settle_domain::money::Currency;
use tauri::State;

use crate::error::CommandError;
use crate::preferences::Preferences;
use crate::save_dialog;
use crate::session::{
    self, parse_date, Connection, Console, DateAudit, Exported, SettlementView, Statistics,
};
use crate::views::RevisionChanges;

type Answer<T> = Result<T, CommandError>;

/// What the window needs at start: what was remembered and whether it is connected.
#[derive(Debug, Serialize)]
pub struct Startup {
    pub preferences: Preferences,
    pub connection: Option<Connection>,
    pub version: &'static str,
    /// Each currency's minor-unit exponent, as the daemon counts it (USD 2, KWD 3, JPY 0), so
    /// the UI formats amounts with the daemon's decimals.
    pub currency_exponents: BTreeMap<&'static str, u32>,
}

#[tauri::command]
pub async fn startup(console: State<'_, Console>) -> Answer<Startup> {
    Ok(Startup {
        preferences: console.preferences(),
        connection: console.connection().await,
        version: env!("CARGO_PKG_VERSION"),
        currency_exponents: Currency::all()
            .iter()
            .map(|currency| (currency.code(), currency.exponent()))
            .collect(),
    })
}

#[tauri::command]
pub async fn set_language(console: State<'_, Console>, language: String) -> Answer<Preferences> {
    console.set_language(&language)
}

#[tauri::command(rename_all = "snake_case")]
pub async fn connect(
    console: State<'_, Console>,
    server_url: String,
    token: String,
) -> Answer<Connection> {
    console.connect(&server_url, &token).await
}

#[tauri::command]
pub async fn sign_out(console: State<'_, Console>) -> Answer<()> {
    console.sign_out().await
}

/// The history screen's filter, as the UI sends it (empty strings mean "any").
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HistoryFilter {
    pub status: String,
    pub from: String,
    pub to: String,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

#[tauri::command]
pub async fn history(
    console: State<'_, Console>,
    filter: HistoryFilter,
) -> Answer<Page<Settlement>> {
    console.history(&history_query(filter)?).await
}

pub fn history_query(filter: HistoryFilter) -> Answer<HistoryQuery> {
    let optional_date = |field, text: &str| {
        (!text.trim().is_empty())
            .then(|| parse_date(field, text))
            .transpose()
    };
    let status = match filter.status.trim() {
        "" => None,
        text => Some(
            serde_json::from_value::<SettlementStatus>(serde_json::Value::String(text.into()))
                .map_err(|_| {
                    CommandError::invalid("status", format!("{text:?} is not a status"))
                })?,
        ),
    };
    Ok(HistoryQuery {
        status,
        from: optional_date("from", &filter.from)?,
        to: optional_date("to", &filter.to)?,
        all_revisions: false,
        page: filter.page,
        per_page: filter.per_page,
    })
}

#[tauri::command]
pub async fn settlement(
    console: State<'_, Console>,
    date: String,
    revision: Option<u32>,
) -> Answer<SettlementView> {
    console
        .settlement(parse_date("date", &date)?, revision)
        .await
}

/// The lines table's state, as the UI sends it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LinesFilter {
    pub revision: Option<u32>,
    pub sort: Option<LineSort>,
    pub order: Option<SortOrder>,
    pub search: String,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

#[tauri::command]
pub async fn lines(
    console: State<'_, Console>,
    date: String,
    filter: LinesFilter,
) -> Answer<LinesPage> {
    let query = LinesQuery {
        revision: filter.revision,
        sort: filter.sort,
        order: filter.order,
        q: Some(filter.search.trim().to_string()).filter(|q| !q.is_empty()),
        page: filter.page,
        per_page: filter.per_page,
    };
    console.lines(parse_date("date", &date)?, &query).await
}

#[tauri::command]
pub async fn revision_changes(
    console: State<'_, Console>,
    date: String,
    revision: u32,
) -> Answer<RevisionChanges> {
    console
        .revision_changes(parse_date("date", &date)?, revision)
        .await
}

#[tauri::command]
pub async fn audit_for_date(console: State<'_, Console>, date: String) -> Answer<DateAudit> {
    console.audit_for_date(parse_date("date", &date)?).await
}

#[tauri::command]
pub async fn statistics(
    console: State<'_, Console>,
    from: String,
    to: String,
) -> Answer<Statistics> {
    console
        .statistics(parse_date("from", &from)?, parse_date("to", &to)?)
        .await
}

/// A fresh Idempotency-Key for an action dialog, made when it opens.
#[tauri::command]
pub fn new_action_key() -> String {
    session::new_action_key()
}

#[tauri::command]
pub async fn trigger(
    console: State<'_, Console>,
    date: String,
    key: String,
) -> Answer<RunAccepted> {
    let date = (!date.trim().is_empty())
        .then(|| parse_date("date", &date))
        .transpose()?;
    console.trigger(date, &key).await
}

#[tauri::command(rename_all = "snake_case")]
pub async fn rerun(
    console: State<'_, Console>,
    date: String,
    reason: String,
    apply_current_fees: bool,
    key: String,
) -> Answer<RerunOutcome> {
    console
        .rerun(
            parse_date("date", &date)?,
            &reason,
            apply_current_fees,
            &key,
        )
        .await
}

#[tauri::command]
pub async fn retry(console: State<'_, Console>, date: String, key: String) -> Answer<RunAccepted> {
    console.retry(parse_date("date", &date)?, &key).await
}

/// Opens the native save dialog for the export of `date` (from Rust: the web view never names
/// the path) and remembers its answer for one `export_csv`. None when cancelled.
#[tauri::command]
pub async fn choose_export_path<R: tauri::Runtime>(
    window: tauri::WebviewWindow<R>,
    console: State<'_, Console>,
    date: String,
    revision: Option<u32>,
    title: String,
) -> Answer<Option<String>> {
    let date = parse_date("date", &date)?;
    let file_name = match revision {
        Some(revision) => format!("settlement-{date}-r{revision}.csv"),
        None => format!("settlement-{date}.csv"),
    };
    match save_dialog::ask(&window, &title, &file_name).await? {
        Some(chosen) => console.remember_export_path(chosen).map(Some),
        None => Ok(None),
    }
}

/// Saves the CSV export where the save dialog of `choose_export_path` said, once; any other path
/// is refused.
#[tauri::command]
pub async fn export_csv(
    console: State<'_, Console>,
    date: String,
    revision: Option<u32>,
    bom: bool,
    path: String,
) -> Answer<Exported> {
    console
        .export_csv(
            parse_date("date", &date)?,
            revision,
            bom,
            &PathBuf::from(path),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_filters_become_queries_or_name_the_bad_field() {
        let query = history_query(HistoryFilter {
            status: "failed".into(),
            from: "2024-03-01".into(),
            to: String::new(),
            page: Some(2),
            per_page: Some(25),
        })
        .unwrap();
        assert_eq!(query.status, Some(SettlementStatus::Failed));
        assert_eq!(query.from.unwrap().to_string(), "2024-03-01");
        assert_eq!(query.to, None);
        assert_eq!((query.page, query.per_page), (Some(2), Some(25)));

        let bad_status = history_query(HistoryFilter {
            status: "lost".into(),
            ..HistoryFilter::default()
        })
        .unwrap_err();
        assert_eq!(bad_status.to_string(), "status: \"lost\" is not a status");
        let bad_date = history_query(HistoryFilter {
            to: "2024-13-01".into(),
            ..HistoryFilter::default()
        })
        .unwrap_err();
        assert!(bad_date.to_string().starts_with("to: "), "{bad_date}");
    }
}
