// English and Arabic: the UI's words, the page direction (Arabic lays everything out right to left)
// and locale formatting of amounts (exact, from integer minor units), calendar dates and instants.

const WORDS = {
  en: {
    "app.title": "Settle Console",
    "app.connected_to": "Connected to",
    "app.token_in": "token in the",
    "app.sign_out": "Sign out",
    "language": "Language",
    "connect.subtitle": "Connect to a Settle server to inspect, rerun and export settlements.",
    "connect.server_url": "Server URL",
    "connect.token": "API token",
    "connect.hint": "Create one with “settle token create”. It is kept in your operating system's keyring, never in a file; leave the field empty to use the token already kept for this server.",
    "connect.button": "Connect",
    "connect.connecting": "Connecting…",
    "connect.expired": "The server refused the token (revoked or unknown). Enter a valid token to connect again.",
    "nav.history": "Settlements",
    "nav.statistics": "Statistics",
    "history.status": "Status",
    "history.from": "From",
    "history.to": "To",
    "history.apply": "Apply",
    "history.empty": "No settlements match these filters.",
    "status.any": "Any",
    "status.completed": "Completed",
    "status.running": "Running",
    "status.failed": "Failed",
    "trigger.scheduler": "Nightly",
    "trigger.manual": "Manual",
    "status.pending": "Pending",
    "col.date": "Date",
    "col.revision": "Revision",
    "col.status": "Status",
    "col.trigger": "Trigger",
    "col.net": "Net",
    "col.completed_at": "Completed",
    "col.currency": "Currency",
    "col.merchants": "Merchants",
    "col.merchant": "Merchant",
    "col.transactions": "Transactions",
    "col.gross": "Gross",
    "col.refunds": "Refunds",
    "col.fees": "Fees",
    "col.reason": "Reason",
    "col.requested_by": "Requested by",
    "col.amount": "Amount",
    "col.attempts": "Attempts",
    "col.reference": "Reference",
    "col.when": "When",
    "col.actor": "Actor",
    "col.action": "Action",
    "col.subject": "Subject",
    "col.outcome": "Outcome",
    "col.days": "Days",
    "col.success_rate": "Success rate",
    "pager.previous": "Previous",
    "pager.next": "Next",
    "pager.page": "Page {page}",
    "state.loading": "Loading…",
    "state.unreachable": "The Settle server cannot be reached. Check that it is running and the URL is right, then try again.",
    "state.timeout": "The Settle server did not answer in time. Try again in a moment.",
    "state.forbidden": "Your token's role does not allow this. Ask an administrator for an operator token.",
    "state.retry": "Try again",
    "detail.back": "Back to settlements",
    "detail.title": "Settlement of {date}",
    "detail.facts": "Revision {revision} · {trigger} · requested by {by} · business timezone {tz} · fees {fees}",
    "detail.totals": "Totals per currency",
    "detail.lines": "Merchant lines",
    "detail.revisions": "Revisions",
    "detail.payouts": "Payouts",
    "detail.audit": "Audit trail",
    "detail.no_totals": "No totals: this revision has not completed.",
    "detail.no_lines": "No merchant lines.",
    "detail.no_payouts": "No payouts for this date.",
    "detail.no_audit": "No audit events mention this date.",
    "detail.error": "Error: {error}",
    "lines.search": "Search merchant",
    "lines.count": "{total} lines",
    "revisions.compare": "Changes",
    "changes.title": "What revision {after} changed against revision {before}",
    "changes.facts": "Reason: {reason} · fee schedule {fees}",
    "changes.fees_changed": "changed",
    "changes.fees_same": "unchanged",
    "changes.none": "No merchant line changed.",
    "changes.before": "Net before",
    "changes.after": "Net after",
    "changes.delta": "Change",
    "audit.partial": "Searched the newest {scanned} audit events; older ones are not shown.",
    "audit.complete": "Every audit event that mentions this date.",
    "statistics.show": "Show",
    "statistics.daily": "Daily gross, fees and net",
    "statistics.success": "Success rate per currency",
    "statistics.top": "Top merchants by gross volume",
    "statistics.empty": "No completed settlement in this range.",
    "actions.trigger": "Settle a date…",
    "actions.rerun": "Rerun…",
    "actions.retry": "Retry…",
    "actions.export": "Export CSV…",
    "trigger.title": "Settle a date",
    "trigger.text": "Settles the chosen business date (leave empty for the latest closed date) and pays each merchant once.",
    "trigger.submit": "Settle",
    "rerun.title": "Rerun {date}",
    "rerun.text": "Settles {date} again as a new revision. Merchants are paid only the difference.",
    "rerun.reason": "Reason (required)",
    "rerun.current_fees": "Apply the current fee schedule (not the previous revision's)",
    "rerun.confirm": "I understand this settles the date again and pays any difference to merchants.",
    "rerun.submit": "Rerun",
    "rerun.need_reason": "Say why this date is settled again.",
    "rerun.need_confirm": "Tick the confirmation to rerun.",
    "rerun.awaiting": "Rerun requested: another operator must approve it.",
    "retry.title": "Retry {date}",
    "retry.text": "Resumes the failed revision of {date}; payouts already sent are not sent again.",
    "retry.submit": "Retry",
    "dialog.cancel": "Cancel",
    "dialog.close": "Close",
    "action.running": "Working… revision {revision} is running.",
    "action.done": "Revision {revision} of {date}: {status}.",
    "action.replayed": "This request was already made: nothing ran twice.",
    "export.saving": "Exporting…",
    "export.saved": "Saved {bytes} bytes to {path}.",
    "export.title": "Export settlement {date}",
    "export.cancelled": "Export cancelled.",
    "outcome.succeeded": "succeeded",
    "outcome.failed": "failed",
    "outcome.refused": "refused",
    "payout.pending": "pending",
    "payout.held": "held",
    "payout.sent": "sent",
    "payout.confirmed": "confirmed",
    "payout.failed": "failed",
    "payout.unknown": "unknown",
  },
  ar: {
    "app.title": "وحدة تحكم Settle",
    "app.connected_to": "متصل بـ",
    "app.token_in": "الرمز محفوظ في",
    "app.sign_out": "تسجيل الخروج",
    "language": "اللغة",
    "connect.subtitle": "اتصل بخادم Settle لعرض التسويات وإعادة تشغيلها وتصديرها.",
    "connect.server_url": "عنوان الخادم",
    "connect.token": "رمز الواجهة البرمجية",
    "connect.hint": "أنشئ رمزًا بالأمر “settle token create”. يُحفظ في سلسلة مفاتيح نظام التشغيل، وليس في ملف أبدًا؛ اترك الحقل فارغًا لاستخدام الرمز المحفوظ لهذا الخادم.",
    "connect.button": "اتصال",
    "connect.connecting": "جارٍ الاتصال…",
    "connect.expired": "رفض الخادم الرمز (ملغى أو غير معروف). أدخل رمزًا صالحًا للاتصال مجددًا.",
    "nav.history": "التسويات",
    "nav.statistics": "الإحصاءات",
    "history.status": "الحالة",
    "history.from": "من",
    "history.to": "إلى",
    "history.apply": "تطبيق",
    "history.empty": "لا توجد تسويات تطابق هذه المرشحات.",
    "status.any": "الكل",
    "status.completed": "مكتملة",
    "status.running": "قيد التشغيل",
    "status.failed": "فاشلة",
    "trigger.scheduler": "ليلي",
    "trigger.manual": "يدوي",
    "status.pending": "معلّقة",
    "col.date": "التاريخ",
    "col.revision": "المراجعة",
    "col.status": "الحالة",
    "col.trigger": "المُشغِّل",
    "col.net": "الصافي",
    "col.completed_at": "اكتملت في",
    "col.currency": "العملة",
    "col.merchants": "التجار",
    "col.merchant": "التاجر",
    "col.transactions": "المعاملات",
    "col.gross": "الإجمالي",
    "col.refunds": "المبالغ المستردة",
    "col.fees": "الرسوم",
    "col.reason": "السبب",
    "col.requested_by": "طلبها",
    "col.amount": "المبلغ",
    "col.attempts": "المحاولات",
    "col.reference": "المرجع",
    "col.when": "الوقت",
    "col.actor": "المنفّذ",
    "col.action": "الإجراء",
    "col.subject": "الموضوع",
    "col.outcome": "النتيجة",
    "col.days": "الأيام",
    "col.success_rate": "نسبة النجاح",
    "pager.previous": "السابق",
    "pager.next": "التالي",
    "pager.page": "الصفحة {page}",
    "state.loading": "جارٍ التحميل…",
    "state.unreachable": "تعذّر الوصول إلى خادم Settle. تحقّق من أنه يعمل ومن صحة العنوان، ثم أعد المحاولة.",
    "state.timeout": "لم يُجب خادم Settle في الوقت المحدد. أعد المحاولة بعد قليل.",
    "state.forbidden": "دور رمزك لا يسمح بهذا. اطلب من المسؤول رمز مشغّل.",
    "state.retry": "أعد المحاولة",
    "detail.back": "العودة إلى التسويات",
    "detail.title": "تسوية {date}",
    "detail.facts": "المراجعة {revision} · {trigger} · طلبها {by} · المنطقة الزمنية للأعمال {tz} · الرسوم {fees}",
    "detail.totals": "الإجماليات حسب العملة",
    "detail.lines": "بنود التجار",
    "detail.revisions": "المراجعات",
    "detail.payouts": "الدفعات",
    "detail.audit": "سجل التدقيق",
    "detail.no_totals": "لا إجماليات: لم تكتمل هذه المراجعة.",
    "detail.no_lines": "لا توجد بنود للتجار.",
    "detail.no_payouts": "لا توجد دفعات لهذا التاريخ.",
    "detail.no_audit": "لا توجد أحداث تدقيق تذكر هذا التاريخ.",
    "detail.error": "خطأ: {error}",
    "lines.search": "البحث عن تاجر",
    "lines.count": "{total} بند",
    "revisions.compare": "التغييرات",
    "changes.title": "ما غيّرته المراجعة {after} مقارنة بالمراجعة {before}",
    "changes.facts": "السبب: {reason} · جدول الرسوم {fees}",
    "changes.fees_changed": "تغيّر",
    "changes.fees_same": "لم يتغيّر",
    "changes.none": "لم يتغيّر أي بند.",
    "changes.before": "الصافي قبل",
    "changes.after": "الصافي بعد",
    "changes.delta": "الفرق",
    "audit.partial": "بُحث في أحدث {scanned} حدث تدقيق؛ الأقدم غير معروض.",
    "audit.complete": "كل أحداث التدقيق التي تذكر هذا التاريخ.",
    "statistics.show": "عرض",
    "statistics.daily": "الإجمالي والرسوم والصافي يوميًا",
    "statistics.success": "نسبة النجاح حسب العملة",
    "statistics.top": "أكبر التجار حسب الحجم الإجمالي",
    "statistics.empty": "لا توجد تسوية مكتملة في هذه الفترة.",
    "actions.trigger": "تسوية تاريخ…",
    "actions.rerun": "إعادة التشغيل…",
    "actions.retry": "إعادة المحاولة…",
    "actions.export": "تصدير CSV…",
    "trigger.title": "تسوية تاريخ",
    "trigger.text": "يسوّي تاريخ العمل المختار (اتركه فارغًا لآخر تاريخ مغلق) ويدفع لكل تاجر مرة واحدة.",
    "trigger.submit": "تسوية",
    "rerun.title": "إعادة تشغيل {date}",
    "rerun.text": "يسوّي {date} مجددًا كمراجعة جديدة. يُدفع للتجار الفرق فقط.",
    "rerun.reason": "السبب (مطلوب)",
    "rerun.current_fees": "تطبيق جدول الرسوم الحالي (وليس جدول المراجعة السابقة)",
    "rerun.confirm": "أفهم أن هذا يسوّي التاريخ مجددًا ويدفع أي فرق للتجار.",
    "rerun.submit": "إعادة التشغيل",
    "rerun.need_reason": "اذكر سبب تسوية هذا التاريخ مجددًا.",
    "rerun.need_confirm": "ضع علامة على التأكيد لإعادة التشغيل.",
    "rerun.awaiting": "طُلبت إعادة التشغيل: يجب أن يوافق عليها مشغّل آخر.",
    "retry.title": "إعادة محاولة {date}",
    "retry.text": "يستأنف المراجعة الفاشلة لـ {date}؛ لا تُرسل الدفعات المرسلة مرة أخرى.",
    "retry.submit": "إعادة المحاولة",
    "dialog.cancel": "إلغاء",
    "dialog.close": "إغلاق",
    "action.running": "جارٍ العمل… المراجعة {revision} قيد التشغيل.",
    "action.done": "المراجعة {revision} لـ {date}: {status}.",
    "action.replayed": "سبق تقديم هذا الطلب: لم يُنفَّذ شيء مرتين.",
    "export.saving": "جارٍ التصدير…",
    "export.saved": "حُفظ {bytes} بايت في {path}.",
    "export.title": "تصدير تسوية {date}",
    "export.cancelled": "أُلغي التصدير.",
    "outcome.succeeded": "نجح",
    "outcome.failed": "فشل",
    "outcome.refused": "رُفض",
    "payout.pending": "معلّقة",
    "payout.held": "محتجزة",
    "payout.sent": "مُرسلة",
    "payout.confirmed": "مؤكدة",
    "payout.failed": "فاشلة",
    "payout.unknown": "غير معروفة",
  },
};

/** The languages the UI speaks, with their locale for formatting and their direction. */
export const LANGUAGES = {
  en: { locale: "en-GB", dir: "ltr" },
  ar: { locale: "ar", dir: "rtl" },
};

let language = "en";
let exponents = {};

export function currentLanguage() {
  return language;
}

/** The minor-unit exponent of each currency, as the daemon counts it. */
export function setCurrencyExponents(table) {
  exponents = table ?? {};
}

/** Switches the page: `lang`, `dir` and every `data-i18n` text. */
export function setLanguage(code) {
  language = LANGUAGES[code] ? code : "en";
  const root = document.documentElement;
  root.lang = language;
  root.dir = LANGUAGES[language].dir;
  for (const element of document.querySelectorAll("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n);
  }
  for (const select of document.querySelectorAll(".language-select")) {
    select.value = language;
  }
}

/** The word for `key` in the current language, `{name}` placeholders filled from `values`. */
export function t(key, values = {}) {
  const text = WORDS[language][key] ?? WORDS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

function locale() {
  return LANGUAGES[language].locale;
}

/**
 * An amount of `minor` units of `code`, formatted for the locale with the currency's own decimals.
 * Exact: the integer and fraction digits come from the integer (as a BigInt), never from a float;
 * Intl only supplies the symbol, the separators, the digit shapes and the order of the parts.
 */
export function formatMinor(minor, code) {
  if (!Number.isSafeInteger(minor)) {
    return "—";
  }
  const exponent = exponents[code] ?? 2;
  const negative = minor < 0;
  const digits = BigInt(Math.abs(minor)).toString().padStart(exponent + 1, "0");
  const integer = BigInt(digits.slice(0, digits.length - exponent));
  const fraction = digits.slice(digits.length - exponent);
  let template;
  try {
    template = new Intl.NumberFormat(locale(), {
      style: "currency",
      currency: code,
      minimumFractionDigits: exponent,
      maximumFractionDigits: exponent,
    }).formatToParts(negative ? -1 : 1);
  } catch {
    return `${negative ? "-" : ""}${digits.slice(0, digits.length - exponent)}${exponent ? "." + fraction : ""} ${code}`;
  }
  const grouped = new Intl.NumberFormat(locale(), { maximumFractionDigits: 0 }).format(integer);
  const shape = new Intl.NumberFormat(locale(), { useGrouping: false });
  const localFraction = fraction.replace(/\d/g, (digit) => shape.format(Number(digit)));
  return template
    .map((part) => {
      if (part.type === "integer") return grouped;
      if (part.type === "fraction") return localFraction;
      return part.value;
    })
    .join("");
}

/** A whole count formatted for the locale. */
export function formatCount(count) {
  return new Intl.NumberFormat(locale()).format(count);
}

/** A calendar date (`YYYY-MM-DD`, a business date: no time zone applies). */
export function formatDate(isoDate) {
  const [year, month, day] = isoDate.split("-").map(Number);
  return new Intl.DateTimeFormat(locale(), { dateStyle: "medium", timeZone: "UTC" }).format(
    new Date(Date.UTC(year, month - 1, day)),
  );
}

/** A stored instant (UTC) shown in the business time zone `timeZone`. */
export function formatInstant(instant, timeZone) {
  if (!instant) return "—";
  try {
    // (dateStyle/timeStyle cannot be combined with timeZoneName: the fields are spelled out.)
    return new Intl.DateTimeFormat(locale(), {
      year: "numeric",
      month: "short",
      day: "numeric",
      hour: "2-digit",
      minute: "2-digit",
      timeZone,
      timeZoneName: "short",
    }).format(new Date(instant));
  } catch {
    return instant;
  }
}

/** A success rate such as `"0.9876"` as a locale percentage, from its digits (no float math). */
export function formatRate(rate) {
  const [whole, fraction = ""] = rate.split(".");
  const basisPoints = Number(whole) * 10000 + Number(fraction.padEnd(4, "0").slice(0, 4));
  const percent = new Intl.NumberFormat(locale(), { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  // basisPoints / 100 has at most two decimals, which a double represents to the digit shown.
  return `${percent.format(basisPoints / 100)} %`;
}
