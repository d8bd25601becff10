//! The operations files in `ops/`: the Prometheus rules pass `promtool check rules` and their unit
//! tests (`promtool test rules`), the Prometheus and Alertmanager configurations are valid, every
//! alert has a severity and a runbook (and every runbook an alert), every alert has a unit test in
//! which it fires and one in which it stays silent, and every metric name in a rule or a dashboard
//! is one of ops/METRICS.md, `up`, or a recording rule defined in `ops/prometheus/rules/`.
//!
//! `promtool` (Debian package `prometheus`) and `amtool` (`prometheus-alertmanager`) are installed
//! by scripts/test.sh; without them these tests fail and say so. The YAML files are read with a
//! small reader of the block-style subset they are written in (mappings, sequences, quoted and
//! plain scalars, `|`/`>` block scalars, one-line flow sequences): anything else is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

// --- files ------------------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the repository")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The files of `dir` (relative to the repository) whose names end with `suffix`, sorted, as
/// paths relative to the repository.
fn files_in(dir: &str, suffix: &str) -> Vec<String> {
    let path = repo_root().join(dir);
    let mut names: Vec<String> = std::fs::read_dir(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .map(|entry| entry.expect("directory entry").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name.ends_with(suffix))
        .map(|name| format!("{dir}/{name}"))
        .collect();
    names.sort();
    names
}

fn rule_files() -> Vec<String> {
    let files = files_in("ops/prometheus/rules", ".yml");
    assert!(
        files.len() >= 2,
        "the SLO and the alert rule files are missing: {files:?}"
    );
    files
}

fn rule_test_files() -> Vec<String> {
    let files = files_in("ops/prometheus/tests", "_test.yml");
    assert!(
        !files.is_empty(),
        "no promtool unit tests in ops/prometheus/tests"
    );
    files
}

const DASHBOARDS: [&str; 3] = [
    "ops/grafana/overview.json",
    "ops/grafana/business.json",
    "ops/grafana/slo.json",
];
const ALERTMANAGER_CONFIG: &str = "ops/alertmanager/alertmanager.yml";
const PROMETHEUS_CONFIG: &str = "ops/prometheus/prometheus.yml";
const RUNBOOKS: &str = "ops/runbooks";

// --- promtool and amtool --------------------------------------------------------------------

/// Runs `program` (from `package`) in the repository root. A missing program fails the test and
/// says how to install it.
fn run_tool<S: AsRef<OsStr>>(program: &str, package: &str, args: &[S]) -> Output {
    match Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .output()
    {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "{program} is missing: it comes with the Debian package {package}; run \
             ./scripts/test.sh, which installs it, then run the tests again"
        ),
        Err(error) => panic!("cannot run {program}: {error}"),
    }
}

fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn promtool<S: AsRef<OsStr>>(args: &[S]) -> Output {
    run_tool("promtool", "prometheus", args)
}

fn amtool<S: AsRef<OsStr>>(args: &[S]) -> Output {
    run_tool("amtool", "prometheus-alertmanager", args)
}

// --- a reader for the YAML the ops files are written in ----------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Yaml {
    Null,
    Str(String),
    Seq(Vec<Yaml>),
    Map(Vec<(String, Yaml)>),
}

impl Yaml {
    fn get(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn str(&self) -> Option<&str> {
        match self {
            Yaml::Str(text) => Some(text),
            _ => None,
        }
    }

    fn seq(&self) -> &[Yaml] {
        match self {
            Yaml::Seq(items) => items,
            _ => &[],
        }
    }

    fn entries(&self) -> &[(String, Yaml)] {
        match self {
            Yaml::Map(entries) => entries,
            _ => &[],
        }
    }

    /// The string at `path` (keys separated by '.'), if there is one.
    fn str_at(&self, path: &str) -> Option<&str> {
        path.split('.')
            .try_fold(self, |node, key| node.get(key))
            .and_then(Yaml::str)
    }
}

struct Line {
    indent: usize,
    text: String,
}

struct YamlReader {
    name: String,
    lines: Vec<Line>,
    pos: usize,
}

fn parse_yaml(name: &str, source: &str) -> Yaml {
    let lines = source
        .lines()
        .map(|raw| {
            assert!(
                !raw.starts_with('\t'),
                "{name}: tabs are not YAML indentation"
            );
            let text = raw.trim_start_matches(' ');
            Line {
                indent: raw.len() - text.len(),
                text: text.trim_end().to_string(),
            }
        })
        .collect();
    let mut reader = YamlReader {
        name: name.to_string(),
        lines,
        pos: 0,
    };
    let document = reader.block(0);
    reader.skip_insignificant();
    if reader.pos < reader.lines.len() {
        reader.fail("unexpected content after the document");
    }
    document
}

/// `text` without a trailing `# comment` (a '#' at the start or after a blank, outside quotes).
fn strip_comment(text: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (index, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && previous.is_whitespace() => return text[..index].trim_end(),
            None => {}
        }
        previous = c;
    }
    text.trim_end()
}

/// Splits `key: value` (or `key:`) into key and value; None when the text is not a mapping entry.
fn split_key(text: &str) -> Option<(String, &str)> {
    if let Some(quote) = text.chars().next().filter(|c| *c == '\'' || *c == '"') {
        let end = text[1..].find(quote)? + 1;
        let rest = text[end + 1..].strip_prefix(':')?;
        if !(rest.is_empty() || rest.starts_with(' ')) {
            return None;
        }
        return Some((text[1..end].to_string(), rest.trim()));
    }
    if text.starts_with(['[', '{', '|', '>', '-']) {
        return None;
    }
    let end = text
        .char_indices()
        .find(|&(index, c)| c == ':' && text[index + 1..].chars().next().is_none_or(|n| n == ' '))
        .map(|(index, _)| index)?;
    Some((text[..end].to_string(), text[end + 1..].trim()))
}

fn is_sequence_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

impl YamlReader {
    fn fail(&self, message: &str) -> ! {
        panic!("{}: line {}: {message}", self.name, self.pos + 1)
    }

    fn significant(&self, index: usize) -> bool {
        !strip_comment(&self.lines[index].text).is_empty()
    }

    fn skip_insignificant(&mut self) {
        while self.pos < self.lines.len() && !self.significant(self.pos) {
            self.pos += 1;
        }
    }

    /// The node starting at the next significant line, if it is indented at least `min_indent`.
    fn block(&mut self, min_indent: usize) -> Yaml {
        self.skip_insignificant();
        let Some(line) = self.lines.get(self.pos) else {
            return Yaml::Null;
        };
        if line.indent < min_indent {
            return Yaml::Null;
        }
        let indent = line.indent;
        let text = strip_comment(&line.text).to_string();
        if is_sequence_item(&text) {
            self.sequence(indent)
        } else if split_key(&text).is_some() {
            self.mapping(indent)
        } else {
            self.pos += 1;
            self.inline(&text)
        }
    }

    fn sequence(&mut self, indent: usize) -> Yaml {
        let mut items = Vec::new();
        loop {
            self.skip_insignificant();
            let Some(line) = self.lines.get(self.pos) else {
                break;
            };
            let text = strip_comment(&line.text).to_string();
            if line.indent != indent || !is_sequence_item(&text) {
                if line.indent > indent {
                    self.fail("unexpected indentation in a sequence");
                }
                break;
            }
            let rest = text[1..].trim_start();
            if rest.is_empty() {
                self.pos += 1;
                items.push(self.block(indent + 1));
            } else if split_key(rest).is_some() || is_sequence_item(rest) {
                // "- key: value": a mapping (or sequence) indented where its first key starts.
                let offset = text.len() - rest.len();
                let raw_rest = self.lines[self.pos].text[offset..].to_string();
                self.lines[self.pos] = Line {
                    indent: indent + offset,
                    text: raw_rest,
                };
                items.push(self.block(indent + offset));
            } else {
                self.pos += 1;
                items.push(self.value(indent, rest));
            }
        }
        Yaml::Seq(items)
    }

    fn mapping(&mut self, indent: usize) -> Yaml {
        let mut entries: Vec<(String, Yaml)> = Vec::new();
        loop {
            self.skip_insignificant();
            let Some(line) = self.lines.get(self.pos) else {
                break;
            };
            if line.indent < indent {
                break;
            }
            if line.indent > indent {
                self.fail("unexpected indentation (a multi-line plain scalar?)");
            }
            let text = strip_comment(&line.text).to_string();
            if is_sequence_item(&text) {
                break;
            }
            let Some((key, rest)) = split_key(&text) else {
                self.fail("expected `key: value`");
            };
            if entries.iter().any(|(k, _)| *k == key) {
                self.fail(&format!("duplicate key {key:?}"));
            }
            self.pos += 1;
            let value = if rest.is_empty() {
                self.skip_insignificant();
                match self.lines.get(self.pos) {
                    Some(next) if next.indent > indent => self.block(indent + 1),
                    Some(next)
                        if next.indent == indent && is_sequence_item(strip_comment(&next.text)) =>
                    {
                        self.sequence(indent)
                    }
                    _ => Yaml::Null,
                }
            } else {
                self.value(indent, rest)
            };
            entries.push((key, value));
        }
        Yaml::Map(entries)
    }

    /// A value written on its key's line: a block scalar header or an inline scalar.
    fn value(&mut self, parent_indent: usize, text: &str) -> Yaml {
        if text.starts_with('|') || text.starts_with('>') {
            return self.block_scalar(parent_indent, text);
        }
        self.inline(text)
    }

    fn block_scalar(&mut self, parent_indent: usize, header: &str) -> Yaml {
        let folded = header.starts_with('>');
        let chomping = &header[1..];
        if !["", "-", "+"].contains(&chomping) {
            self.fail("unsupported block scalar header");
        }
        let mut raw = Vec::new();
        while let Some(line) = self.lines.get(self.pos) {
            if !line.text.is_empty() && line.indent <= parent_indent {
                break;
            }
            raw.push(line);
            self.pos += 1;
        }
        let content_indent = raw
            .iter()
            .find(|line| !line.text.is_empty())
            .map_or(0, |line| line.indent);
        let lines: Vec<String> = raw
            .iter()
            .map(|line| {
                if line.text.is_empty() {
                    String::new()
                } else {
                    format!("{}{}", " ".repeat(line.indent - content_indent), line.text)
                }
            })
            .collect();
        let trailing_blank = lines.iter().rev().take_while(|l| l.is_empty()).count();
        let body = &lines[..lines.len() - trailing_blank];
        let mut text = if folded {
            let mut text = String::new();
            for (index, line) in body.iter().enumerate() {
                if index > 0 {
                    text.push(if line.is_empty() || body[index - 1].is_empty() {
                        '\n'
                    } else {
                        ' '
                    });
                }
                text.push_str(line);
            }
            text
        } else {
            body.join("\n")
        };
        match chomping {
            "-" => {}
            "+" => text.push_str(&"\n".repeat(trailing_blank + 1)),
            _ => text.push('\n'),
        }
        Yaml::Str(text)
    }

    fn inline(&self, text: &str) -> Yaml {
        let text = strip_comment(text);
        if let Some(inner) = text.strip_prefix('[') {
            let Some(inner) = inner.strip_suffix(']') else {
                self.fail("a flow sequence must close on its line");
            };
            return Yaml::Seq(
                split_flow(inner)
                    .into_iter()
                    .map(|item| self.inline(item))
                    .collect(),
            );
        }
        if text == "{}" {
            return Yaml::Map(Vec::new());
        }
        if text.starts_with('{') {
            self.fail("flow mappings are not supported");
        }
        if let Some(inner) = text.strip_prefix('\'') {
            let Some(inner) = inner.strip_suffix('\'') else {
                self.fail("unterminated single-quoted scalar");
            };
            return Yaml::Str(inner.replace("''", "'"));
        }
        if let Some(inner) = text.strip_prefix('"') {
            let Some(inner) = inner.strip_suffix('"') else {
                self.fail("unterminated double-quoted scalar");
            };
            return Yaml::Str(unescape_double_quoted(inner));
        }
        if text == "~" || text == "null" {
            return Yaml::Null;
        }
        Yaml::Str(text.to_string())
    }
}

/// The items of a one-line flow sequence, split at commas outside quotes.
fn split_flow(inner: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut quote: Option<char> = None;
    let mut start = 0;
    for (index, c) in inner.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == ',' => {
                items.push(inner[start..index].trim());
                start = index + 1;
            }
            None => {}
        }
    }
    let last = inner[start..].trim();
    if !last.is_empty() || !items.is_empty() {
        items.push(last);
    }
    items
}

fn unescape_double_quoted(inner: &str) -> String {
    let mut text = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            text.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => text.push('\n'),
            Some('t') => text.push('\t'),
            Some(other) => text.push(other),
            None => {}
        }
    }
    text
}

#[test]
fn the_yaml_reader_reads_the_subset_the_ops_files_use() {
    let document = parse_yaml(
        "example",
        "# a comment\n\
         groups:\n\
         \x20 - name: a # trailing comment\n\
         \x20   rules:\n\
         \x20     - record: 'x:y'\n\
         \x20       expr: |\n\
         \x20         sum(x)\n\
         \x20           / 2\n\
         \x20     - alert: A\n\
         \x20       labels: {}\n\
         \x20       annotations:\n\
         \x20         description: >-\n\
         \x20           one\n\
         \x20           two\n\
         list:\n\
         - \"a\\\"b\"\n\
         - [c, 'd, e']\n",
    );
    let rules = document.get("groups").unwrap().seq()[0]
        .get("rules")
        .unwrap();
    assert_eq!(rules.seq()[0].str_at("record"), Some("x:y"));
    assert_eq!(rules.seq()[0].str_at("expr"), Some("sum(x)\n  / 2\n"));
    assert_eq!(
        rules.seq()[1].str_at("annotations.description"),
        Some("one two")
    );
    assert_eq!(rules.seq()[1].get("labels"), Some(&Yaml::Map(Vec::new())));
    let list = document.get("list").unwrap().seq();
    assert_eq!(list[0], Yaml::Str("a\"b".into()));
    assert_eq!(
        list[1],
        Yaml::Seq(vec![Yaml::Str("c".into()), Yaml::Str("d, e".into())])
    );
}

// --- rules ------------------------------------------------------------------------------------

struct Rule {
    file: String,
    node: Yaml,
}

impl Rule {
    fn alert(&self) -> Option<&str> {
        self.node.str_at("alert")
    }
    fn record(&self) -> Option<&str> {
        self.node.str_at("record")
    }
    fn expr(&self) -> &str {
        self.node
            .str_at("expr")
            .unwrap_or_else(|| panic!("{}: a rule without expr", self.file))
    }
}

fn all_rules() -> Vec<Rule> {
    let mut rules = Vec::new();
    for file in rule_files() {
        let document = parse_yaml(&file, &read(&file));
        let groups = document.get("groups").map(Yaml::seq).unwrap_or_default();
        assert!(!groups.is_empty(), "{file}: no rule groups");
        for group in groups {
            for rule in group.get("rules").map(Yaml::seq).unwrap_or_default() {
                rules.push(Rule {
                    file: file.clone(),
                    node: rule.clone(),
                });
            }
        }
    }
    rules
}

fn recording_rule_names() -> BTreeSet<String> {
    all_rules()
        .iter()
        .filter_map(|rule| rule.record().map(str::to_string))
        .collect()
}

#[test]
fn promtool_checks_every_rule_file() {
    let files = rule_files();
    let mut args = vec!["check", "rules"];
    args.extend(files.iter().map(String::as_str));
    let output = promtool(&args);
    assert_success(&format!("promtool check rules {files:?}"), &output);
}

#[test]
fn every_promtool_unit_test_passes() {
    for file in rule_test_files() {
        let output = promtool(&["test", "rules", file.as_str()]);
        assert_success(&format!("promtool test rules {file}"), &output);
    }
}

#[test]
fn the_prometheus_config_scrapes_the_daemon_and_loads_every_rule_file() {
    let output = promtool(&["check", "config", PROMETHEUS_CONFIG]);
    assert_success(
        &format!("promtool check config {PROMETHEUS_CONFIG}"),
        &output,
    );

    let config = parse_yaml(PROMETHEUS_CONFIG, &read(PROMETHEUS_CONFIG));
    let loaded: BTreeSet<String> = config
        .get("rule_files")
        .map(Yaml::seq)
        .unwrap_or_default()
        .iter()
        .filter_map(Yaml::str)
        .map(|path| format!("ops/prometheus/{path}"))
        .collect();
    let expected: BTreeSet<String> = rule_files().into_iter().collect();
    assert_eq!(loaded, expected, "rule_files must load every rule file");

    let scrape_configs = config
        .get("scrape_configs")
        .map(Yaml::seq)
        .unwrap_or_default();
    let settle = scrape_configs
        .iter()
        .find(|job| job.str_at("job_name") == Some("settle"))
        .expect("a scrape job named settle");
    assert_eq!(settle.str_at("metrics_path"), Some("/metrics"));
    let targets: Vec<&str> = settle
        .get("static_configs")
        .map(Yaml::seq)
        .unwrap_or_default()
        .iter()
        .flat_map(|config| config.get("targets").map(Yaml::seq).unwrap_or_default())
        .filter_map(Yaml::str)
        .collect();
    assert!(
        targets.contains(&"127.0.0.1:8787"),
        "the settle job scrapes the daemon's default address: {targets:?}"
    );

    // The 30-day SLOs need at least 30 days of data: the README says how long to keep.
    let readme = read("ops/README.md");
    let flag = "--storage.tsdb.retention.time=";
    let days: u32 = readme
        .split(flag)
        .nth(1)
        .and_then(|rest| rest.split('d').next())
        .and_then(|days| days.parse().ok())
        .unwrap_or_else(|| panic!("ops/README.md must give {flag}<N>d"));
    assert!(
        days > 30,
        "a retention of {days} days is too short for a 30-day SLO"
    );
}

#[test]
fn every_alert_has_a_severity_a_summary_and_its_own_runbook() {
    let rules = all_rules();
    let mut alerts = BTreeSet::new();
    for rule in &rules {
        let Some(alert) = rule.alert() else {
            continue;
        };
        assert!(
            alerts.insert(alert.to_string()),
            "{}: alert {alert} is defined twice",
            rule.file
        );
        let severity = rule.node.str_at("labels.severity");
        assert!(
            matches!(severity, Some("page" | "ticket")),
            "{}: {alert} has severity {severity:?}, not page or ticket",
            rule.file
        );
        for annotation in ["summary", "description"] {
            let text = rule.node.str_at(&format!("annotations.{annotation}"));
            assert!(
                text.is_some_and(|text| !text.trim().is_empty()),
                "{}: {alert} has no {annotation}",
                rule.file
            );
        }
        let runbook = format!("{RUNBOOKS}/{alert}.md");
        assert_eq!(
            rule.node.str_at("annotations.runbook_url"),
            Some(runbook.as_str()),
            "{}: {alert}'s runbook_url must be the repository path of its runbook",
            rule.file
        );
        assert!(
            repo_root().join(&runbook).is_file(),
            "{alert}'s runbook {runbook} is missing"
        );
    }
    assert!(!alerts.is_empty(), "no alerts found");

    for runbook in files_in(RUNBOOKS, "") {
        let name = runbook
            .strip_prefix(&format!("{RUNBOOKS}/"))
            .and_then(|name| name.strip_suffix(".md"))
            .unwrap_or_else(|| panic!("{runbook}: a runbook is a Markdown file"));
        assert!(
            alerts.contains(name),
            "{runbook} belongs to no alert (alerts: {alerts:?})"
        );
    }
}

#[test]
fn every_alert_fires_and_stays_silent_and_every_recording_rule_is_evaluated_in_a_unit_test() {
    let rules = all_rules();
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    let mut evaluated = BTreeSet::new();
    let mut tested_rule_files = BTreeSet::new();
    for file in rule_test_files() {
        let document = parse_yaml(&file, &read(&file));
        let dir = Path::new(&file).parent().expect("a test file's folder");
        for rule_file in document
            .get("rule_files")
            .map(Yaml::seq)
            .unwrap_or_default()
        {
            let path = dir.join(rule_file.str().expect("a rule file path"));
            let normalised = std::fs::canonicalize(repo_root().join(&path))
                .unwrap_or_else(|error| panic!("{file}: {}: {error}", path.display()));
            tested_rule_files.insert(normalised);
        }
        for case in document.get("tests").map(Yaml::seq).unwrap_or_default() {
            for test in case
                .get("alert_rule_test")
                .map(Yaml::seq)
                .unwrap_or_default()
            {
                let alert = test.str_at("alertname").expect("alertname").to_string();
                if test
                    .get("exp_alerts")
                    .map(Yaml::seq)
                    .unwrap_or_default()
                    .is_empty()
                {
                    silent.insert(alert);
                } else {
                    fires.insert(alert);
                }
            }
            for test in case
                .get("promql_expr_test")
                .map(Yaml::seq)
                .unwrap_or_default()
            {
                let samples = test.get("exp_samples").map(Yaml::seq).unwrap_or_default();
                if !samples.is_empty() {
                    evaluated.insert(test.str_at("expr").expect("expr").trim().to_string());
                }
            }
        }
    }
    for file in rule_files() {
        let path = std::fs::canonicalize(repo_root().join(&file)).expect("rule file");
        assert!(
            tested_rule_files.contains(&path),
            "no unit test file loads {file}"
        );
    }
    for rule in &rules {
        if let Some(alert) = rule.alert() {
            assert!(fires.contains(alert), "no unit test shows {alert} firing");
            assert!(
                silent.contains(alert),
                "no unit test shows {alert} staying silent"
            );
        }
        if let Some(record) = rule.record() {
            assert!(
                evaluated.contains(record),
                "no unit test checks the value of the recording rule {record}"
            );
        }
    }
}

// --- Alertmanager -----------------------------------------------------------------------------

#[test]
fn amtool_accepts_the_alertmanager_config_and_it_routes_by_severity() {
    let output = amtool(&["check-config", ALERTMANAGER_CONFIG]);
    assert_success(
        &format!("amtool check-config {ALERTMANAGER_CONFIG}"),
        &output,
    );

    let config_flag = format!("--config.file={ALERTMANAGER_CONFIG}");
    for (severity, receiver) in [("page", "settle-page"), ("ticket", "settle-ticket")] {
        let label = format!("severity={severity}");
        let verify = format!("--verify.receivers={receiver}");
        let output = amtool(&[
            "config",
            "routes",
            "test",
            config_flag.as_str(),
            verify.as_str(),
            "alertname=SettleExample",
            label.as_str(),
        ]);
        assert_success(
            &format!("amtool config routes test: {label} goes to {receiver}"),
            &output,
        );
    }
}

// --- metric names -----------------------------------------------------------------------------

/// The Prometheus series of ops/METRICS.md: the backticked names of its "Prometheus series"
/// column, a histogram's `x_bucket/_sum/_count` expanded to its three series.
fn contract_metric_names() -> BTreeSet<String> {
    let text = read("ops/METRICS.md");
    let mut column = None;
    let mut names = BTreeSet::new();
    for line in text
        .lines()
        .filter(|line| line.trim_start().starts_with('|'))
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if column.is_none() {
            column = cells.iter().position(|cell| *cell == "Prometheus series");
            continue;
        }
        let Some(cell) = column.and_then(|index| cells.get(index)) else {
            continue;
        };
        for (index, quoted) in cell.split('`').enumerate() {
            if index % 2 == 0 {
                continue;
            }
            let mut parts = quoted.split('/');
            let first = parts.next().unwrap_or_default().to_string();
            let stem = first
                .rsplit_once('_')
                .map(|(stem, _)| stem.to_string())
                .unwrap_or_default();
            for suffix in parts {
                names.insert(format!("{stem}{suffix}"));
            }
            if let Some(stem) = first.strip_suffix("_bucket") {
                names.insert(format!("{stem}_sum"));
                names.insert(format!("{stem}_count"));
            }
            names.insert(first);
        }
    }
    assert!(
        column.is_some(),
        "ops/METRICS.md has no \"Prometheus series\" column"
    );
    assert!(
        names.len() > 10,
        "too few names read from ops/METRICS.md: {names:?}"
    );
    names
}

/// PromQL words that look like metric names but are not: aggregations (which may be followed by
/// `by (…)` before their parenthesis), operators and literals.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
];
/// Modifiers followed by a list of label names in parentheses.
const LABEL_LIST_MODIFIERS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Skips from `open` (at `chars[start]`) to just past its matching `close`, stepping over strings.
fn skip_balanced(chars: &[char], start: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    let mut index = start;
    while index < chars.len() {
        let c = chars[index];
        if c == '"' || c == '\'' || c == '`' {
            index = skip_string(chars, index);
            continue;
        }
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return index + 1;
            }
        }
        index += 1;
    }
    chars.len()
}

fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut index = start + 1;
    while index < chars.len() {
        match chars[index] {
            '\\' if quote != '`' => index += 2,
            c if c == quote => return index + 1,
            _ => index += 1,
        }
    }
    chars.len()
}

fn is_identifier_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_identifier_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The metric names in a PromQL expression: identifiers that are not functions (followed by
/// '('), aggregations, keywords, label names (inside `{…}` or `by (…)`-like lists), durations
/// (inside `[…]` or after `offset`) or Grafana variables (`$…`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut index = 0;
    while index < chars.len() {
        let c = chars[index];
        match c {
            '"' | '\'' | '`' => index = skip_string(&chars, index),
            '{' => index = skip_balanced(&chars, index, '{', '}'),
            '[' => index = skip_balanced(&chars, index, '[', ']'),
            '#' => {
                while index < chars.len() && chars[index] != '\n' {
                    index += 1;
                }
            }
            '$' => {
                index += 1;
                if chars.get(index) == Some(&'{') {
                    index = skip_balanced(&chars, index, '{', '}');
                } else {
                    while index < chars.len() && is_identifier_char(chars[index]) {
                        index += 1;
                    }
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(index + 1).is_some_and(char::is_ascii_digit)) =>
            {
                while index < chars.len()
                    && (chars[index].is_ascii_alphanumeric()
                        || chars[index] == '.'
                        || chars[index] == '_')
                {
                    index += 1;
                }
            }
            c if is_identifier_start(c) => {
                let start = index;
                while index < chars.len() && is_identifier_char(chars[index]) {
                    index += 1;
                }
                let word: String = chars[start..index].iter().collect();
                let mut next = index;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let followed_by_paren = chars.get(next) == Some(&'(');
                if LABEL_LIST_MODIFIERS.contains(&word.as_str()) {
                    if followed_by_paren {
                        index = skip_balanced(&chars, next, '(', ')');
                    }
                } else if !followed_by_paren && !PROMQL_WORDS.contains(&word.as_str()) {
                    names.insert(word);
                }
            }
            _ => index += 1,
        }
    }
    names
}

#[test]
fn the_metric_name_reader_finds_metrics_and_nothing_else() {
    let names = metric_names(
        "sum by (job, le) (rate(a_total{job=\"settle\",x=~\"b|c\"}[5m] offset 1h)) / on (job) \
         group_left (le) histogram_quantile(0.99, b:c:rate5m) > bool 1e3 and max(d) without (e) \
         or vector(0) * $__range + count(f[$__rate_interval]) unless ${datasource}",
    );
    let expected: BTreeSet<String> = ["a_total", "b:c:rate5m", "d", "f"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(names, expected);
}

/// Every PromQL expression of the dashboards: (dashboard, panel title, expression).
fn dashboard_expressions() -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for file in DASHBOARDS {
        let dashboard: serde_json::Value =
            serde_json::from_str(&read(file)).unwrap_or_else(|error| panic!("{file}: {error}"));
        for panel in all_panels(&dashboard) {
            let title = panel["title"].as_str().unwrap_or_default().to_string();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{file}: panel {title:?} has a target without expr"));
                found.push((file.to_string(), title.clone(), expr.to_string()));
            }
        }
    }
    found
}

/// The panels of a dashboard, including those inside collapsed rows.
fn all_panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        panels.push(panel);
        panels.extend(panel["panels"].as_array().into_iter().flatten());
    }
    panels
}

#[test]
fn rules_and_dashboards_use_only_the_contract_metrics_and_the_recording_rules() {
    let contract = contract_metric_names();
    let recorded = recording_rule_names();
    let allowed = |name: &str| name == "up" || contract.contains(name) || recorded.contains(name);

    let mut expressions: Vec<(String, String)> = all_rules()
        .iter()
        .map(|rule| {
            let name = rule.alert().or(rule.record()).unwrap_or("?");
            (format!("{}: {name}", rule.file), rule.expr().to_string())
        })
        .collect();
    expressions.extend(
        dashboard_expressions()
            .into_iter()
            .map(|(file, title, expr)| (format!("{file}: panel {title:?}"), expr)),
    );
    let mut problems = Vec::new();
    for (place, expr) in &expressions {
        let names = metric_names(expr);
        if names.is_empty() {
            problems.push(format!("{place}: no metric found in {expr:?}"));
        }
        for name in names.iter().filter(|name| !allowed(name)) {
            problems.push(format!(
                "{place}: {name} is neither in ops/METRICS.md, `up`, nor a recording rule"
            ));
        }
        // A ratio padded with a made-up zero hides missing data.
        if expr.contains("vector(") {
            problems.push(format!("{place}: padded with vector(…): {expr:?}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// --- dashboards -------------------------------------------------------------------------------

#[test]
fn dashboards_query_the_datasource_variable_with_valid_promql() {
    let mut uids = BTreeSet::new();
    for file in DASHBOARDS {
        let dashboard: serde_json::Value =
            serde_json::from_str(&read(file)).unwrap_or_else(|error| panic!("{file}: {error}"));
        let uid = dashboard["uid"].as_str().unwrap_or_default();
        assert!(
            !uid.is_empty() && uids.insert(uid.to_string()),
            "{file}: uid {uid:?} missing or reused"
        );
        assert!(
            dashboard["schemaVersion"].as_u64().unwrap_or_default() >= 36,
            "{file}: schemaVersion below 36"
        );
        assert!(
            dashboard["title"]
                .as_str()
                .is_some_and(|title| !title.is_empty()),
            "{file}: no title"
        );
        let variables = dashboard["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            variables
                .iter()
                .any(|variable| variable["name"] == "datasource"
                    && variable["type"] == "datasource"
                    && variable["query"] == "prometheus"),
            "{file}: no template variable `datasource` of Prometheus data sources"
        );
        let panels = all_panels(&dashboard);
        let mut queried = 0;
        for panel in panels.iter().filter(|panel| panel["type"] != "row") {
            let title = panel["title"].as_str().unwrap_or_default();
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{file}: panel {title:?} does not use the datasource variable"
            );
            for target in panel["targets"].as_array().into_iter().flatten() {
                assert_eq!(
                    target["datasource"]["uid"], "${datasource}",
                    "{file}: a target of panel {title:?} does not use the datasource variable"
                );
                queried += 1;
            }
        }
        assert!(queried > 0, "{file}: no queries");
    }

    // promtool parses PromQL in rule files: the dashboards' queries, with Grafana's interval
    // variables replaced by a duration, become recording rules of a throw-away file.
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    for (index, (_, _, expr)) in dashboard_expressions().iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$__interval", "1m")
            .replace("$__range", "1d");
        let quoted = serde_json::to_string(&expr).expect("a JSON string is a YAML string");
        rules.push_str(&format!(
            "      - record: dashboard:query:{index}\n        expr: {quoted}\n"
        ));
    }
    let path = dir.path().join("dashboards.yml");
    std::fs::write(&path, rules).expect("write the dashboards' queries");
    let output = promtool(&[OsStr::new("check"), OsStr::new("rules"), path.as_os_str()]);
    assert_success("promtool check rules on the dashboards' queries", &output);
}

// --- OpenTelemetry Collector ------------------------------------------------------------------

#[test]
fn the_collector_config_wires_otlp_in_and_prometheus_and_otlp_out() {
    const FILE: &str = "ops/otel/collector.yaml";
    let config = parse_yaml(FILE, &read(FILE));
    assert!(
        config
            .str_at("receivers.otlp.protocols.grpc.endpoint")
            .is_some_and(|endpoint| endpoint.ends_with(":4317")),
        "{FILE}: OTLP over gRPC on 4317"
    );
    assert!(
        config
            .str_at("receivers.otlp.protocols.http.endpoint")
            .is_some_and(|endpoint| endpoint.ends_with(":4318")),
        "{FILE}: OTLP over HTTP on 4318"
    );
    let defined = |section: &str| -> BTreeSet<String> {
        config
            .get(section)
            .map(Yaml::entries)
            .unwrap_or_default()
            .iter()
            .map(|(name, _)| name.clone())
            .collect()
    };
    let sections: BTreeMap<&str, BTreeSet<String>> = ["receivers", "processors", "exporters"]
        .into_iter()
        .map(|section| (section, defined(section)))
        .collect();
    assert!(
        sections["processors"].contains("batch"),
        "{FILE}: a batch processor"
    );
    for exporter in ["prometheus", "debug"] {
        assert!(
            sections["exporters"].contains(exporter),
            "{FILE}: a {exporter} exporter"
        );
    }

    let pipelines = config
        .get("service")
        .and_then(|service| service.get("pipelines"))
        .expect("service.pipelines");
    let components = |pipeline: &str, section: &str| -> Vec<String> {
        pipelines
            .get(pipeline)
            .and_then(|p| p.get(section))
            .map(Yaml::seq)
            .unwrap_or_default()
            .iter()
            .filter_map(Yaml::str)
            .map(str::to_string)
            .collect()
    };
    for pipeline in ["metrics", "traces"] {
        for section in ["receivers", "processors", "exporters"] {
            let used = components(pipeline, section);
            assert!(
                !used.is_empty(),
                "{FILE}: the {pipeline} pipeline has no {section}"
            );
            for name in used {
                assert!(
                    sections[section].contains(&name),
                    "{FILE}: the {pipeline} pipeline uses {section} {name}, which is not defined"
                );
            }
        }
        assert!(
            components(pipeline, "processors").contains(&"batch".to_string()),
            "{FILE}: the {pipeline} pipeline batches"
        );
    }
    assert!(
        components("metrics", "exporters").contains(&"prometheus".to_string()),
        "{FILE}: metrics go to the prometheus exporter"
    );
    assert!(
        components("traces", "exporters")
            .iter()
            .any(|name| name == "otlp" || name.starts_with("otlp/")),
        "{FILE}: traces go to an OTLP exporter"
    );
}
