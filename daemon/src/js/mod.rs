//! The JavaScript engine: QuickJS (via `rquickjs`) set up for strategy modules.
//!
//! A strategy module is CommonJS evaluated in strict mode (SPEC §1.2). This
//! module provides the building blocks shared by upload inspection and by the
//! instance runtime:
//!
//! - [`new_runtime`] creates a runtime and context with the [`JsLimits`]
//!   applied (memory limit, stack limit, and an interrupt handler driven by a
//!   [`CpuBudget`]);
//! - [`evaluate_module`] installs the module globals (`module`, `exports`,
//!   `console`) and evaluates the source once, returning `module.exports`;
//! - [`error_diagnostic`] turns an engine error into a [`Diagnostic`]
//!   (exception message and position, CPU budget, memory limit);
//! - [`inspect_module`] combines them to evaluate an uploaded module in a
//!   fresh runtime and validate its exports into [`ModuleMetadata`].
//!
//! Nothing here gives JavaScript access to I/O, timers or `require`.
//!
//! The source is evaluated as a strict global script, not wrapped in a
//! function, so that positions in diagnostics are those of the source: a
//! top-level `return` is a syntax error, top-level `this` is `globalThis`,
//! and top-level declarations are globals of the (per-instance) context.
//! Promise jobs queued by the top level are not run.

mod validate;
pub(crate) use validate::type_of;

#[cfg(test)]
mod tests;

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rquickjs::context::EvalOptions;
use rquickjs::function::Rest;
use rquickjs::{Coerced, Context, Ctx, Exception, Function, Object, Runtime, Value};
use strata_shared::metadata::{Diagnostic, DiagnosticStage, ModuleMetadata};

/// File name given to module sources; it appears in stack traces as
/// `<module>:LINE:COL`.
const MODULE_FILE_NAME: &str = "<module>";

/// Globals that would give a module timers, I/O or a module loader. QuickJS
/// does not define them in a plain context; they are deleted anyway so that
/// an engine upgrade cannot silently expose them.
const FORBIDDEN_GLOBALS: &[&str] = &[
    "require",
    "setTimeout",
    "setInterval",
    "setImmediate",
    "clearTimeout",
    "clearInterval",
    "clearImmediate",
    "fetch",
    "XMLHttpRequest",
    "WebSocket",
    "Worker",
    "os",
    "std",
    "scriptArgs",
    "print",
];

/// Resource limits applied to every JS runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsLimits {
    /// Heap limit of the runtime, in bytes.
    pub memory_bytes: usize,
    /// Maximum native stack used by the interpreter, in bytes.
    pub stack_bytes: usize,
    /// Time one evaluation or call may run before it is interrupted.
    pub cpu_budget: Duration,
}

impl Default for JsLimits {
    /// 64 MiB of heap, 512 KiB of stack, 250 ms per call.
    fn default() -> Self {
        JsLimits { memory_bytes: 64 * 1024 * 1024, stack_bytes: 512 * 1024, cpu_budget: Duration::from_millis(250) }
    }
}

/// Severity of a `console` call made by a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogLevel {
    /// `console.log`
    Log,
    /// `console.info`
    Info,
    /// `console.warn`
    Warn,
    /// `console.error`
    Error,
}

impl LogLevel {
    /// Every level, in declaration order.
    pub const ALL: [LogLevel; 4] = [LogLevel::Log, LogLevel::Info, LogLevel::Warn, LogLevel::Error];

    /// Name of the `console` method for this level.
    pub fn method(self) -> &'static str {
        match self {
            LogLevel::Log => "log",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Per-call time budget of one JS runtime, read by its interrupt handler.
///
/// Cheap to clone; clones share state. [`CpuBudget::arm`] starts a deadline
/// of [`CpuBudget::budget`] from now; while the deadline has passed and the
/// budget is armed, the interrupt handler stops the running JS with an
/// uncatchable exception. [`CpuBudget::disarm`] lets JS run unbounded again
/// (the runtime only runs JS when the host calls into it, so a disarmed
/// budget between calls costs nothing). The budget counts wall-clock time,
/// which is CPU time for JS code that can neither block nor do I/O.
///
/// A host function that blocks (e.g. a sleep) brackets the wait with
/// [`CpuBudget::pause`] and [`CpuBudget::resume`] so the wait does not count.
/// [`CpuBudget::cancel`] makes the interrupt handler stop any JS from then
/// on, armed or not (used to stop an instance at once).
#[derive(Debug, Clone)]
pub struct CpuBudget {
    inner: Arc<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    budget: Duration,
    origin: Instant,
    /// Nanoseconds since `origin` plus one at which to interrupt; 0 = disarmed.
    deadline: AtomicU64,
    fired: AtomicBool,
    /// Set by [`CpuBudget::cancel`]; never cleared.
    cancelled: AtomicBool,
}

impl CpuBudget {
    /// A disarmed budget allowing `budget` per armed call.
    pub fn new(budget: Duration) -> Self {
        CpuBudget {
            inner: Arc::new(BudgetState {
                budget,
                origin: Instant::now(),
                deadline: AtomicU64::new(0),
                fired: AtomicBool::new(false),
                cancelled: AtomicBool::new(false),
            }),
        }
    }

    /// Time allowed per armed call.
    pub fn budget(&self) -> Duration {
        self.inner.budget
    }

    /// Starts a deadline of [`CpuBudget::budget`] from now and clears
    /// [`CpuBudget::fired`]. Re-arming restarts the deadline.
    pub fn arm(&self) {
        let deadline = self.elapsed_nanos().saturating_add(nanos(self.inner.budget));
        self.inner.fired.store(false, Ordering::SeqCst);
        self.inner.deadline.store(deadline.saturating_add(1), Ordering::SeqCst);
    }

    /// Arms the budget ([`CpuBudget::arm`]) until the returned guard is
    /// dropped. Hold it over everything that may run module code, including
    /// the formatting of an error the code threw: getters and `toString`
    /// run then too.
    pub fn armed(&self) -> Armed<'_> {
        self.arm();
        Armed { budget: self }
    }

    /// Removes the deadline; [`CpuBudget::fired`] keeps its value.
    pub fn disarm(&self) {
        self.inner.deadline.store(0, Ordering::SeqCst);
    }

    /// Whether the interrupt handler stopped JS since the last
    /// [`CpuBudget::arm`].
    pub fn fired(&self) -> bool {
        self.inner.fired.load(Ordering::SeqCst)
    }

    /// Disarms the budget and returns the time the current call had left
    /// (zero if already past its deadline), or `None` if it was not armed.
    /// Hand the result to [`CpuBudget::resume`].
    pub fn pause(&self) -> Option<Duration> {
        let deadline = self.inner.deadline.swap(0, Ordering::SeqCst);
        if deadline == 0 {
            return None;
        }
        Some(Duration::from_nanos((deadline - 1).saturating_sub(self.elapsed_nanos())))
    }

    /// Re-arms the budget with `remaining` (from [`CpuBudget::pause`]) from
    /// now, keeping [`CpuBudget::fired`]; `None` leaves it disarmed.
    pub fn resume(&self, remaining: Option<Duration>) {
        if let Some(remaining) = remaining {
            let deadline = self.elapsed_nanos().saturating_add(nanos(remaining));
            self.inner.deadline.store(deadline.saturating_add(1), Ordering::SeqCst);
        }
    }

    /// Makes the interrupt handler stop any JS running in the runtime, now
    /// and from now on, whether the budget is armed or not. Cannot be undone;
    /// [`CpuBudget::fired`] is not set by it.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
    }

    /// Whether [`CpuBudget::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// The interrupt handler's check: true when cancelled, or (with
    /// [`CpuBudget::fired`] set) when armed and past the deadline.
    fn should_interrupt(&self) -> bool {
        if self.inner.cancelled.load(Ordering::Relaxed) {
            return true;
        }
        let deadline = self.inner.deadline.load(Ordering::Relaxed);
        if deadline == 0 || self.elapsed_nanos() < deadline - 1 {
            return false;
        }
        self.inner.fired.store(true, Ordering::SeqCst);
        true
    }

    fn elapsed_nanos(&self) -> u64 {
        nanos(self.inner.origin.elapsed())
    }
}

/// Keeps a [`CpuBudget`] armed while it lives (from [`CpuBudget::armed`]).
#[must_use = "the budget is disarmed when the guard is dropped"]
#[derive(Debug)]
pub struct Armed<'a> {
    budget: &'a CpuBudget,
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.budget.disarm();
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Creates a QuickJS runtime and context with `limits` applied.
///
/// The context has the standard ECMAScript built-ins only (no timers, no
/// I/O, no `require`). The returned [`CpuBudget`] drives the runtime's
/// interrupt handler and starts disarmed: arm it around every call into JS
/// ([`evaluate_module`] does so itself).
pub fn new_runtime(limits: &JsLimits) -> rquickjs::Result<(Runtime, Context, CpuBudget)> {
    let runtime = Runtime::new()?;
    runtime.set_memory_limit(limits.memory_bytes);
    runtime.set_max_stack_size(limits.stack_bytes);
    let budget = CpuBudget::new(limits.cpu_budget);
    let handler_budget = budget.clone();
    runtime.set_interrupt_handler(Some(Box::new(move || handler_budget.should_interrupt())));
    let context = Context::full(&runtime)?;
    context.with(|ctx| {
        let globals = ctx.globals();
        for name in FORBIDDEN_GLOBALS {
            globals.remove(*name)?;
        }
        rquickjs::Result::Ok(())
    })?;
    Ok((runtime, context, budget))
}

/// Evaluates a module's source once in `ctx` and returns `module.exports`.
///
/// Installs the globals `module` (an object whose `exports` is a fresh
/// object), `exports` (that same object) and `console` (`log`, `info`,
/// `warn`, `error`, each joining its arguments with spaces and handing the
/// line to `console`), then evaluates `source` as a strict-mode global
/// script named `<module>`, so that line and column numbers in diagnostics
/// are those of `source`. `budget` is armed for the evaluation and disarmed
/// afterwards.
///
/// Errors: a syntax error is a `compile` diagnostic, an exception thrown by
/// the top level (or the CPU budget or memory limit being hit) an `execute`
/// diagnostic, and a `module.exports` that is not an object a `validation`
/// diagnostic.
pub fn evaluate_module<'js>(
    ctx: &Ctx<'js>,
    source: &str,
    budget: &CpuBudget,
    console: impl Fn(LogLevel, String) + 'static,
) -> Result<Object<'js>, Diagnostic> {
    // Armed until the end: reading `module.exports` and formatting what the
    // evaluation threw may run module code too.
    let _armed = budget.armed();
    let module = install_globals(ctx, Rc::new(console)).map_err(|err| error_diagnostic(ctx, err, budget, source))?;

    let mut options = EvalOptions::default();
    options.global = true;
    options.strict = true;
    options.filename = Some(MODULE_FILE_NAME.to_owned());
    ctx.eval_with_options::<(), _>(source, options).map_err(|err| error_diagnostic(ctx, err, budget, source))?;

    let exports: Value<'js> = module.get("exports").map_err(|err| error_diagnostic(ctx, err, budget, source))?;
    match exports.into_object() {
        Some(exports) => Ok(exports),
        None => Err(Diagnostic::validation("module.exports", "module.exports must be an object")),
    }
}

/// Defines `module`, `exports` and `console`; returns the `module` object.
fn install_globals<'js>(ctx: &Ctx<'js>, sink: Rc<dyn Fn(LogLevel, String)>) -> rquickjs::Result<Object<'js>> {
    let globals = ctx.globals();
    let module = Object::new(ctx.clone())?;
    let exports = Object::new(ctx.clone())?;
    module.set("exports", exports.clone())?;
    globals.set("module", module.clone())?;
    globals.set("exports", exports)?;

    let console = Object::new(ctx.clone())?;
    for level in LogLevel::ALL {
        let sink = Rc::clone(&sink);
        let method =
            Function::new(ctx.clone(), move |ctx: Ctx<'js>, args: Rest<Value<'js>>| -> rquickjs::Result<()> {
                sink(level, format_log_args(&ctx, args.0)?);
                Ok(())
            })?
            .with_name(level.method())?;
        console.set(level.method(), method)?;
    }
    globals.set("console", console)?;
    Ok(module)
}

/// Joins the arguments of a `console` call into one line, separated by
/// spaces, each formatted as by the module's `console` (strings as they are,
/// errors as `Name: message`, other objects as JSON, everything else as
/// `String(v)`).
pub fn format_log_args<'js>(ctx: &Ctx<'js>, args: Vec<Value<'js>>) -> rquickjs::Result<String> {
    let mut line = String::new();
    for (index, arg) in args.into_iter().enumerate() {
        if index > 0 {
            line.push(' ');
        }
        line.push_str(&format_log_arg(ctx, arg)?);
    }
    Ok(line)
}

/// Formats one `console` argument: strings as they are, errors as
/// `Name: message`, other objects as JSON, everything else as `String(v)`.
fn format_log_arg<'js>(ctx: &Ctx<'js>, value: Value<'js>) -> rquickjs::Result<String> {
    if let Some(string) = value.as_string() {
        return bounded_text(string);
    }
    if let Some(symbol) = value.as_symbol() {
        let description: Value<'js> = symbol.description()?;
        let description = match description.as_string() {
            Some(description) => bounded_text(description)?,
            None => String::new(),
        };
        return Ok(format!("Symbol({description})"));
    }
    if value.is_function() {
        return Ok("[Function]".to_owned());
    }
    if value.is_object()
        && !value.is_error()
        && let Some(json) = ctx.json_stringify(value.clone())?
    {
        return bounded_text(&json);
    }
    bounded_text(&value.get::<Coerced<rquickjs::String>>()?.0)
}

/// Longest text the host copies out of one JS string (a log argument, an
/// error's name, message or stack). Log lines are cut much shorter when
/// recorded (`[runtime] log_line_max_bytes`); this bound only keeps a
/// module that logs or throws a 20 MiB string from making the daemon copy
/// 20 MiB outside its memory cap (the allocator would keep such pages).
pub const MAX_HOST_TEXT_BYTES: usize = 1024 * 1024;

/// A JS string as Rust text, at most [`MAX_HOST_TEXT_BYTES`] of it: a longer
/// one is cut at a character boundary and ends with the truncation mark,
/// which gives its full size.
pub fn bounded_text(string: &rquickjs::String<'_>) -> rquickjs::Result<String> {
    // A view of the engine's UTF-8 form: only the kept part is copied.
    let view = string.clone().to_cstring()?;
    let text = view.as_str();
    if text.len() <= MAX_HOST_TEXT_BYTES {
        return Ok(text.to_owned());
    }
    Ok(crate::runtime::logs::truncate_message_of(text, MAX_HOST_TEXT_BYTES))
}

/// A property of `object` converted to a string ([`bounded_text`]), or
/// `None` when it is missing, `undefined` or its getter threw (that
/// exception is cleared; a limit it hit is still seen in the budget).
fn bounded_property<'js>(object: &Object<'js>, key: &str) -> Option<String> {
    match object.get::<_, Option<Coerced<rquickjs::String<'js>>>>(key) {
        Ok(value) => value.and_then(|string| bounded_text(&string.0).ok()),
        Err(_) => {
            let _ = object.ctx().catch();
            None
        }
    }
}

/// Turns an error from a call into JS running code of the module `source`
/// into a diagnostic.
///
/// Takes (and so clears) the pending exception. When `budget` fired, the
/// `execute` diagnostic says the CPU budget was exceeded; when QuickJS ran
/// out of memory, it says the memory limit was hit; otherwise its message is
/// `Name: message` of the thrown value, with the 1-based line and column of
/// the innermost `<module>` stack frame when the value carries a stack
/// (column counted in characters of `source`). A syntax error in the module
/// source itself is a `compile` diagnostic.
pub fn error_diagnostic<'js>(ctx: &Ctx<'js>, error: rquickjs::Error, budget: &CpuBudget, source: &str) -> Diagnostic {
    match catch_error(ctx, error, budget) {
        Caught::Fatal(diagnostic) => diagnostic,
        Caught::Thrown(thrown) => {
            let mut diagnostic = describe_exception(ctx, thrown);
            // Formatting ran the thrown value's getters: they may have hit a
            // limit themselves.
            if let Some(fatal) = fatal_after_formatting(ctx, budget) {
                return fatal;
            }
            if let (Some(line), Some(column)) = (diagnostic.line, diagnostic.column) {
                diagnostic.column = Some(char_column(source, line, column));
            }
            diagnostic
        }
    }
}

/// The fatal diagnostic when a limit was hit while a thrown value was being
/// formatted (its `message` getter looped, say), with the exception that
/// left behind cleared.
fn fatal_after_formatting(ctx: &Ctx<'_>, budget: &CpuBudget) -> Option<Diagnostic> {
    if !budget.fired() && !budget.is_cancelled() {
        return None;
    }
    let _ = ctx.catch();
    match catch_error(ctx, rquickjs::Error::Unknown, budget) {
        Caught::Fatal(diagnostic) => Some(diagnostic),
        Caught::Thrown(_) => None,
    }
}

/// Start of the message of every diagnostic [`error_diagnostic`] (and so
/// [`evaluate_module`]) makes when the runtime's memory limit was hit.
pub const MEMORY_LIMIT_MESSAGE: &str = "memory limit hit";

/// Whether `diagnostic`, made by this module, reports that the memory limit
/// was hit. (A message thrown by JS always starts with the error's name or
/// `uncaught exception:`, so it cannot be mistaken for one.)
pub fn is_memory_limit(diagnostic: &Diagnostic) -> bool {
    diagnostic.stage == DiagnosticStage::Execute && diagnostic.message.starts_with(MEMORY_LIMIT_MESSAGE)
}

/// Converts QuickJS's 1-based column, counted in bytes, to a 1-based column
/// counted in characters of line `line` of `source`.
fn char_column(source: &str, line: u32, byte_column: u32) -> u32 {
    let Some(text) = source.split('\n').nth(line.saturating_sub(1) as usize) else {
        return byte_column;
    };
    let mut end = (byte_column.saturating_sub(1) as usize).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    u32::try_from(text[..end].chars().count() + 1).unwrap_or(byte_column)
}

/// An engine error, sorted by whether the JS code could have caught it.
enum Caught<'js> {
    /// CPU budget, memory limit or an engine failure, already described.
    Fatal(Diagnostic),
    /// An ordinary thrown value.
    Thrown(Value<'js>),
}

/// Takes the pending exception of `error` and sorts it.
fn catch_error<'js>(ctx: &Ctx<'js>, error: rquickjs::Error, budget: &CpuBudget) -> Caught<'js> {
    let thrown = match error {
        rquickjs::Error::Exception => Some(ctx.catch()),
        _ => None,
    };
    if budget.fired() {
        return Caught::Fatal(Diagnostic::new(
            DiagnosticStage::Execute,
            format!("CPU budget of {} ms exceeded: execution was interrupted", budget.budget().as_millis()),
        ));
    }
    if budget.is_cancelled() {
        return Caught::Fatal(Diagnostic::new(DiagnosticStage::Execute, "execution was cancelled"));
    }
    let Some(thrown) = thrown else {
        return Caught::Fatal(match error {
            rquickjs::Error::Allocation => {
                Diagnostic::new(DiagnosticStage::Execute, format!("{MEMORY_LIMIT_MESSAGE}: allocation failed"))
            }
            rquickjs::Error::InvalidString(_) => {
                Diagnostic::new(DiagnosticStage::Compile, "source contains a NUL byte")
            }
            other => Diagnostic::new(DiagnosticStage::Execute, format!("JS engine error: {other}")),
        });
    };
    let out_of_memory = thrown
        .as_object()
        .and_then(|obj| Exception::from_object(obj.clone()))
        .is_some_and(|err| err.message().as_deref() == Some("out of memory"));
    if out_of_memory {
        return Caught::Fatal(Diagnostic::new(
            DiagnosticStage::Execute,
            format!("{MEMORY_LIMIT_MESSAGE}: the module ran out of memory"),
        ));
    }
    Caught::Thrown(thrown)
}

/// Builds the diagnostic for a thrown value.
fn describe_exception<'js>(ctx: &Ctx<'js>, thrown: Value<'js>) -> Diagnostic {
    let Some(error) = thrown.as_object().and_then(|obj| Exception::from_object(obj.clone())) else {
        let shown = format_log_arg(ctx, thrown).unwrap_or_else(|_| {
            // Formatting threw: drop that exception too.
            let _ = ctx.catch();
            "a value that cannot be shown".to_owned()
        });
        return Diagnostic::new(DiagnosticStage::Execute, format!("uncaught exception: {shown}"));
    };
    let name: String = error
        .get::<_, Coerced<rquickjs::String<'js>>>("name")
        .and_then(|name| bounded_text(&name.0))
        .unwrap_or_else(|_| {
            let _ = ctx.catch();
            "Error".to_owned()
        });
    let message = bounded_property(&error, "message").unwrap_or_default();
    let stack = bounded_property(&error, "stack").unwrap_or_default();
    let frame = first_module_frame(&stack);
    let stage = match frame {
        Some(frame) if name == "SyntaxError" && frame.is_parse_error => DiagnosticStage::Compile,
        _ => DiagnosticStage::Execute,
    };
    Diagnostic {
        line: frame.map(|frame| frame.line),
        column: frame.map(|frame| frame.column),
        ..Diagnostic::new(stage, format!("{name}: {message}"))
    }
}

/// A `<module>:LINE:COL` location found in a QuickJS stack trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    line: u32,
    column: u32,
    /// The frame is the parser's position (`at <module>:L:C`, with no
    /// function name) rather than a running function's.
    is_parse_error: bool,
}

/// Finds the innermost stack frame located in the module source.
///
/// QuickJS writes running frames as `    at NAME (<module>:L:C)` and the
/// position of a parse error as its first line, `    at <module>:L:C`.
fn first_module_frame(stack: &str) -> Option<Frame> {
    let bare_prefix = format!("at {MODULE_FILE_NAME}:");
    let call_marker = format!("({MODULE_FILE_NAME}:");
    stack.lines().enumerate().find_map(|(index, line)| {
        let line = line.trim();
        let (rest, is_parse_error) = if let Some(rest) = line.strip_prefix(&bare_prefix) {
            (rest, index == 0)
        } else {
            let start = line.find(&call_marker)? + call_marker.len();
            (line[start..].strip_suffix(')')?, false)
        };
        let (line_no, column) = rest.split_once(':')?;
        Some(Frame { line: line_no.parse().ok()?, column: column.parse().ok()?, is_parse_error })
    })
}

/// Evaluates an uploaded module once in a fresh runtime and validates its
/// exports.
///
/// Returns the module's metadata (with the `dry_run` config field added when
/// the schema lacks it), or every problem found: a `compile` diagnostic for
/// non-UTF-8 source or a syntax error, an `execute` diagnostic when the top
/// level throws or exceeds the CPU budget or memory limit, otherwise all
/// `validation` diagnostics at once, each with the JSON path of the
/// offending value as its hint. `console` output goes to `tracing` at debug
/// level.
pub fn inspect_module(source: &[u8], limits: &JsLimits) -> Result<ModuleMetadata, Vec<Diagnostic>> {
    let source = std::str::from_utf8(source).map_err(|err| vec![utf8_diagnostic(source, &err)])?;
    let (_runtime, context, budget) = new_runtime(limits).map_err(|err| {
        vec![Diagnostic::new(DiagnosticStage::Execute, format!("could not create a JS runtime: {err}"))]
    })?;
    context.with(|ctx| {
        let exports = evaluate_module(&ctx, source, &budget, |level, line| {
            tracing::debug!(target: "strata::js::inspect", ?level, "{line}");
        })
        .map_err(|diagnostic| vec![diagnostic])?;

        let metadata = read_export(&ctx, &budget, "metadata", || {
            let metadata: Value = exports.get("metadata")?;
            match ctx.json_stringify(metadata)? {
                Some(json) => json.to_string().map(Some),
                None => Ok(None),
            }
        })?;
        let metadata = metadata.and_then(|json| match json {
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|err| Diagnostic::validation("metadata", format!("metadata cannot be read as JSON: {err}"))),
            None => Ok(None),
        });
        let create = read_export(&ctx, &budget, "create", || Ok(exports.get::<_, Value>("create")?.is_function()))?;
        validate::validate_exports(metadata, create)
    })
}

/// Runs `read` (which may run module code: getters, `toJSON`) under the CPU
/// budget. The outer error is fatal (CPU budget, memory); an exception thrown
/// by module code is an inner `validation` diagnostic with `path` as hint.
fn read_export<'js, T>(
    ctx: &Ctx<'js>,
    budget: &CpuBudget,
    path: &str,
    read: impl FnOnce() -> rquickjs::Result<T>,
) -> Result<Result<T, Diagnostic>, Vec<Diagnostic>> {
    let _armed = budget.armed();
    match read() {
        Ok(value) => Ok(Ok(value)),
        Err(err) => match catch_error(ctx, err, budget) {
            Caught::Fatal(diagnostic) => Err(vec![diagnostic]),
            Caught::Thrown(thrown) => {
                let message = describe_exception(ctx, thrown).message;
                if let Some(fatal) = fatal_after_formatting(ctx, budget) {
                    return Err(vec![fatal]);
                }
                Ok(Err(Diagnostic::validation(path, format!("{path} could not be read: {message}"))))
            }
        },
    }
}

/// The `compile` diagnostic for source that is not UTF-8, pointing at the
/// first invalid byte (column counted in characters).
fn utf8_diagnostic(source: &[u8], err: &std::str::Utf8Error) -> Diagnostic {
    let valid = &source[..err.valid_up_to()];
    let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |pos| pos + 1);
    // `valid` is UTF-8 by definition of `valid_up_to`.
    let column = std::str::from_utf8(&valid[line_start..]).map_or(0, |text| text.chars().count());
    let line = valid.iter().filter(|&&b| b == b'\n').count();
    Diagnostic {
        line: u32::try_from(line + 1).ok(),
        column: u32::try_from(column + 1).ok(),
        ..Diagnostic::new(
            DiagnosticStage::Compile,
            format!("source is not valid UTF-8: invalid byte at offset {}", err.valid_up_to()),
        )
    }
}
