use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::json;
use strata_shared::metadata::{
    ConfigField, ConfigType, Diagnostic, DiagnosticStage, EventKind, MAX_CONFIG_FIELDS, ModuleMetadata,
};

use super::*;

fn inspect(source: &str) -> Result<ModuleMetadata, Vec<Diagnostic>> {
    inspect_module(source.as_bytes(), &JsLimits::default())
}

fn inspect_err(source: &str) -> Vec<Diagnostic> {
    match inspect(source) {
        Ok(metadata) => panic!("expected diagnostics, got {metadata:?}"),
        Err(diagnostics) => diagnostics,
    }
}

fn single(source: &str) -> Diagnostic {
    let mut diagnostics = inspect_err(source);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    diagnostics.remove(0)
}

fn hints(diagnostics: &[Diagnostic]) -> Vec<&str> {
    diagnostics
        .iter()
        .map(|diagnostic| {
            assert_eq!(diagnostic.stage, DiagnosticStage::Validation, "{diagnostic:?}");
            diagnostic.hint.as_deref().unwrap_or("")
        })
        .collect()
}

fn dry_run_field() -> ConfigField {
    ConfigField {
        name: "dry_run".into(),
        kind: ConfigType::Bool,
        default: Some(json!(true)),
        required: false,
        description: None,
    }
}

const MODERN_MODULE: &str = r#"
'use strict';
const WINDOW = 1_000;
let counter = 0;
const label = (name, ...rest) => `${name}:${rest.length}`;
function scaled(value, factor = 2) { return value * factor; }
const { lookback = 20, ...others } = { threshold: 0.5 };
const [first, , third] = [1, 2, 3];
const nested = { deep: { value: null } };
const fallback = nested.deep?.value ?? WINDOW;
const missing = nested.absent?.value;
class Averager {
  #sum = 0;
  add(x) { this.#sum += x; return this; }
  get sum() { return this.#sum; }
}
const avg = new Averager().add(first).add(third);
console.log('loading', label('momentum', 1, 2), { lookback, others, avg: avg.sum, missing });
module.exports = {
  metadata: {
    name: "momentum",
    tag: "v1.2.0",
    displayName: `Momentum ${scaled(1)}x`,
    description: "Follows the trend",
    version: "1.2.0",
    config: [
      { name: "lookback", type: "int", default: lookback, required: false, description: "bars" },
      { name: "threshold", type: "float", default: others.threshold, required: true },
      { name: "symbol", type: "string" },
      { name: "cooldown", type: "duration", default: "150ms" },
      { name: "delay", type: "duration", default: fallback },
      { name: "enabled", type: "bool", default: false },
      { name: "size", type: "number", default: 0.25 },
    ],
    events: ["Trade", "ExecReport"],
  },
  create(env) {
    counter += 1;
    return { onTrade(ctx, evt, payload, price) { return price ?? counter; } };
  },
};
"#;

#[test]
fn modern_module_yields_metadata_with_dry_run_injected() {
    let metadata = inspect(MODERN_MODULE).expect("valid module");
    let field = |name: &str, kind, default, required, description: Option<&str>| ConfigField {
        name: name.into(),
        kind,
        default,
        required,
        description: description.map(Into::into),
    };
    assert_eq!(
        metadata,
        ModuleMetadata {
            name: "momentum".into(),
            display_name: "Momentum 2x".into(),
            description: Some("Follows the trend".into()),
            tag: Some("v1.2.0".into()),
            version: Some("1.2.0".into()),
            config: vec![
                field("lookback", ConfigType::Int, Some(json!(20)), false, Some("bars")),
                field("threshold", ConfigType::Float, Some(json!(0.5)), true, None),
                field("symbol", ConfigType::String, None, false, None),
                field("cooldown", ConfigType::Duration, Some(json!("150ms")), false, None),
                field("delay", ConfigType::Duration, Some(json!(1000)), false, None),
                field("enabled", ConfigType::Bool, Some(json!(false)), false, None),
                field("size", ConfigType::Number, Some(json!(0.25)), false, None),
                dry_run_field(),
            ],
            events: vec![EventKind::Trade, EventKind::ExecReport],
        }
    );
}

#[test]
fn exports_assignment_style_works() {
    let metadata = inspect(
        r#"
exports.metadata = { name: "plain", displayName: "Plain", events: ["Ticker"] };
exports.create = function (env) { return {}; };
Promise.resolve(1).then(() => { for (;;) {} });
"#,
    )
    .expect("valid module");
    assert_eq!(metadata.name, "plain");
    assert_eq!(metadata.config, vec![dry_run_field()]);
    assert_eq!(metadata.events, vec![EventKind::Ticker]);
    assert_eq!(metadata.description, None);
}

#[test]
fn module_exports_reassignment_wins_over_exports() {
    let metadata = inspect(
        r#"
exports.metadata = { name: "stale", displayName: "Stale", events: ["Ticker"] };
module.exports = {
  metadata: { name: "fresh", displayName: "Fresh", events: ["Extension", "RiskControl"] },
  create: () => ({}),
};
"#,
    )
    .expect("valid module");
    assert_eq!(metadata.name, "fresh");
    assert_eq!(metadata.events, vec![EventKind::Extension, EventKind::RiskControl]);
}

#[test]
fn declared_dry_run_is_kept() {
    let metadata = inspect(
        r#"
module.exports = {
  metadata: { name: "x", displayName: "X", events: ["Trade"],
              config: [{ name: "dry_run", type: "bool", default: false, description: "paper" }] },
  create() {},
};
"#,
    )
    .expect("valid module");
    assert_eq!(
        metadata.config,
        vec![ConfigField { default: Some(json!(false)), description: Some("paper".into()), ..dry_run_field() }]
    );
}

#[test]
fn dry_run_must_be_bool() {
    let diagnostics = inspect_err(
        r#"
module.exports = {
  metadata: { name: "x", displayName: "X", events: ["Trade"],
              config: [{ name: "a", type: "int" }, { name: "dry_run", type: "string" }] },
  create() {},
};
"#,
    );
    assert_eq!(hints(&diagnostics), ["metadata.config[1].type"]);
}

#[test]
fn syntax_error_is_a_compile_diagnostic_with_position() {
    let diagnostic = single("const a = 1;\nconst b = 2;\n  let c = = 3;\n");
    assert_eq!(diagnostic.stage, DiagnosticStage::Compile, "{diagnostic:?}");
    assert!(diagnostic.message.starts_with("SyntaxError"), "{diagnostic:?}");
    assert_eq!(diagnostic.line, Some(3), "{diagnostic:?}");
    assert_eq!(diagnostic.column, Some(11), "{diagnostic:?}");

    let diagnostic = single("module.exports = {\n  metadata: { name: 'x' \n};\n");
    assert_eq!(diagnostic.stage, DiagnosticStage::Compile, "{diagnostic:?}");
    assert_eq!(diagnostic.line, Some(3), "{diagnostic:?}");
}

#[test]
fn columns_count_characters_not_bytes() {
    let diagnostic = single("const s = 'ééé'; let c = = 3;\n");
    assert_eq!((diagnostic.line, diagnostic.column), (Some(1), Some(26)), "{diagnostic:?}");
    let diagnostic = single("// …\nconst s = '€'; throw new Error('x');\n");
    assert_eq!((diagnostic.line, diagnostic.column), (Some(2), Some(26)), "{diagnostic:?}");
    assert_eq!(char_column("ab", 1, 9), 3);
    assert_eq!(char_column("ab", 4, 9), 9);
}

#[test]
fn strict_mode_violations_are_compile_errors() {
    let diagnostic = single("var x = 1;\ndelete x;\n");
    assert_eq!(diagnostic.stage, DiagnosticStage::Compile, "{diagnostic:?}");
    assert_eq!(diagnostic.line, Some(2), "{diagnostic:?}");
    let diagnostic = single("with (Math) { max(1, 2); }\n");
    assert_eq!(diagnostic.stage, DiagnosticStage::Compile, "{diagnostic:?}");
}

#[test]
fn runtime_syntax_error_is_an_execute_diagnostic() {
    let diagnostic = single("const x = 1;\nJSON.parse('{');\n");
    assert_eq!(diagnostic.stage, DiagnosticStage::Execute, "{diagnostic:?}");
    assert!(diagnostic.message.starts_with("SyntaxError"), "{diagnostic:?}");
    assert_eq!(diagnostic.line, Some(2), "{diagnostic:?}");
}

#[test]
fn top_level_throw_is_an_execute_diagnostic_with_position() {
    let diagnostic = single("const a = 1;\n\nthrow new Error('boom');\n");
    assert_eq!(diagnostic.stage, DiagnosticStage::Execute, "{diagnostic:?}");
    assert_eq!(diagnostic.message, "Error: boom");
    assert_eq!(diagnostic.line, Some(3), "{diagnostic:?}");
    // QuickJS reports where the Error object was constructed (`Error(`).
    assert_eq!(diagnostic.column, Some(11), "{diagnostic:?}");
    assert_eq!(diagnostic.hint, None);

    let diagnostic = single("function f() {\n  return undefinedThing + 1;\n}\nf();\n");
    assert_eq!(diagnostic.stage, DiagnosticStage::Execute, "{diagnostic:?}");
    assert!(diagnostic.message.starts_with("ReferenceError"), "{diagnostic:?}");
    assert_eq!(diagnostic.line, Some(2), "{diagnostic:?}");

    let diagnostic = single("throw 'plain string';");
    assert_eq!(diagnostic.stage, DiagnosticStage::Execute, "{diagnostic:?}");
    assert_eq!(diagnostic.message, "uncaught exception: plain string");
}

#[test]
fn infinite_loop_hits_the_cpu_budget() {
    let started = Instant::now();
    let diagnostic = single("let i = 0;\nwhile (true) { i++; }\n");
    let elapsed = started.elapsed();
    assert_eq!(diagnostic.stage, DiagnosticStage::Execute, "{diagnostic:?}");
    assert!(diagnostic.message.contains("CPU budget"), "{diagnostic:?}");
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    assert!(elapsed >= Duration::from_millis(250), "took {elapsed:?}");
}

#[test]
fn catching_the_interrupt_is_impossible() {
    let started = Instant::now();
    let diagnostic = single("for (;;) { try { while (true) {} } catch (e) {} finally { continue; } }\n");
    assert!(diagnostic.message.contains("CPU budget"), "{diagnostic:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn looping_metadata_getter_hits_the_cpu_budget() {
    let diagnostic = single("module.exports = { get metadata() { for (;;) {} }, create() {} };\n");
    assert_eq!(diagnostic.stage, DiagnosticStage::Execute, "{diagnostic:?}");
    assert!(diagnostic.message.contains("CPU budget"), "{diagnostic:?}");
}

#[test]
fn unbounded_allocation_hits_the_memory_limit() {
    let limits = JsLimits { memory_bytes: 16 * 1024 * 1024, ..JsLimits::default() };
    let source = "const hoard = [];\nfor (;;) { hoard.push(new Array(10000).fill('x' + hoard.length)); }\n";
    let diagnostics = inspect_module(source.as_bytes(), &limits).unwrap_err();
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0].stage, DiagnosticStage::Execute);
    assert!(diagnostics[0].message.contains("memory"), "{diagnostics:?}");

    // The default 64 MiB fill up quickly (a generous CPU budget keeps a
    // loaded machine from turning this into a CPU budget test).
    let limits = JsLimits { cpu_budget: Duration::from_secs(10), ..JsLimits::default() };
    let source = "const all = [];\nfor (let i = 0; ; i++) { all.push(new Array(100_000).fill(i)); }\n";
    let diagnostics = inspect_module(source.as_bytes(), &limits).unwrap_err();
    assert_eq!(diagnostics[0].stage, DiagnosticStage::Execute);
    assert!(diagnostics[0].message.contains("memory"), "{diagnostics:?}");
}

#[test]
fn deep_recursion_is_an_execute_diagnostic() {
    let diagnostic = single("function f(n) { return f(n + 1) + 1; }\nf(0);\n");
    assert_eq!(diagnostic.stage, DiagnosticStage::Execute, "{diagnostic:?}");
    assert!(diagnostic.message.contains("stack"), "{diagnostic:?}");
}

#[test]
fn bad_metadata_reports_every_problem() {
    let long_name = "x".repeat(81);
    let diagnostics = inspect_err(&format!(
        r#"
module.exports = {{
  metadata: {{
    displayName: "{long_name}",
    events: [],
    config: [
      {{ name: "ok", type: "int", default: 3 }},
      {{ name: "lookback", type: "int", default: "twenty" }},
    ],
  }},
}};
"#
    ));
    assert_eq!(
        hints(&diagnostics),
        ["metadata.name", "metadata.displayName", "metadata.config[1].default", "metadata.events", "create",],
        "{diagnostics:#?}"
    );

    let diagnostics = inspect_err(
        r#"
module.exports = {
  metadata: {
    name: "Bad/Name",
    displayName: "",
    tag: "a:b",
    events: ["Trade", "Trades", 3, "Trade"],
    config: [
      { name: "a", type: "integer" },
      { name: "a", type: "int" },
      { name: "b", type: "duration", default: "soon" },
      { name: "c", type: "bool", default: 1, required: "yes" },
      "nope",
    ],
  },
  create: 42,
};
"#,
    );
    assert_eq!(
        hints(&diagnostics),
        [
            "metadata.name",
            "metadata.displayName",
            "metadata.tag",
            "metadata.config[0].type",
            "metadata.config[1].name",
            "metadata.config[2].default",
            "metadata.config[3].default",
            "metadata.config[3].required",
            "metadata.config[4]",
            "metadata.events[1]",
            "metadata.events[2]",
            "metadata.events[3]",
            "create",
        ],
        "{diagnostics:#?}"
    );
    assert!(diagnostics[0].message.contains("Bad/Name"), "{:?}", diagnostics[0]);
}

#[test]
fn reserved_name_is_rejected() {
    let diagnostics = inspect_err(
        "module.exports = { metadata: { name: 'registry', displayName: 'R', events: ['Trade'] }, \
         create() {} };",
    );
    assert_eq!(hints(&diagnostics), ["metadata.name"]);
}

#[test]
fn missing_or_odd_exports_are_validation_diagnostics() {
    let diagnostics = inspect_err("const x = 1;\n");
    assert_eq!(hints(&diagnostics), ["metadata", "create"]);

    let diagnostics = inspect_err("module.exports = { metadata: [], create() {} };");
    assert_eq!(hints(&diagnostics), ["metadata"]);

    let diagnostics = inspect_err("module.exports = 5;");
    assert_eq!(hints(&diagnostics), ["module.exports"]);

    let diagnostics =
        inspect_err("const m = { name: 'x' }; m.self = m;\nmodule.exports = { metadata: m, create() {} };");
    assert_eq!(hints(&diagnostics), ["metadata"]);
    assert!(diagnostics[0].message.contains("TypeError"), "{diagnostics:?}");
}

#[test]
fn no_require_timers_or_io() {
    let metadata = inspect(
        r#"
for (const name of ["require", "setTimeout", "setInterval", "setImmediate", "clearTimeout",
                    "clearInterval", "fetch", "process", "std", "os", "print", "XMLHttpRequest"]) {
  if (typeof globalThis[name] !== "undefined") throw new Error(name + " is defined");
}
if (typeof require !== "undefined") throw new Error("require is defined");
if (typeof setTimeout !== "undefined") throw new Error("setTimeout is defined");
if (typeof setInterval !== "undefined") throw new Error("setInterval is defined");
let blocked = true;
try { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10); } catch (e) { blocked = false; }
if (blocked) throw new Error("Atomics.wait can block");
if (module.exports !== exports) throw new Error("exports is not module.exports");
for (const level of ["log", "info", "warn", "error"]) {
  if (typeof console[level] !== "function") throw new Error("console." + level + " missing");
}
module.exports = { metadata: { name: "safe", displayName: "Safe", events: ["Trade"] }, create() {} };
"#,
    )
    .expect("sandboxed module");
    assert_eq!(metadata.name, "safe");
}

#[test]
fn non_utf8_source_is_a_compile_diagnostic() {
    let diagnostics = inspect_module(b"const a = 1;\nconst b = '\xff';\n", &JsLimits::default()).unwrap_err();
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0].stage, DiagnosticStage::Compile);
    assert!(diagnostics[0].message.contains("UTF-8"), "{diagnostics:?}");
    assert_eq!(diagnostics[0].line, Some(2));
    assert_eq!(diagnostics[0].column, Some(12));

    let diagnostics = inspect_module(b"const a = 1;\0", &JsLimits::default()).unwrap_err();
    assert_eq!(diagnostics[0].stage, DiagnosticStage::Compile, "{diagnostics:?}");
}

#[test]
fn console_lines_reach_the_sink_and_budget_is_reusable() {
    let (_runtime, context, budget) = new_runtime(&JsLimits::default()).unwrap();
    let lines = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&lines);
    context.with(|ctx| {
        let exports = evaluate_module(
            &ctx,
            "console.log('a', 1, true, null, undefined, [1, 'b'], { k: 2 });\n\
             console.warn(new TypeError('bad'), Symbol('s'), () => 1);\n\
             exports.create = () => ({ spin() { for (;;) {} }, ok: () => 7 });",
            &budget,
            move |level, line| sink.borrow_mut().push((level, line)),
        )
        .unwrap();
        assert_eq!(
            *lines.borrow(),
            [
                (LogLevel::Log, r#"a 1 true null undefined [1,"b"] {"k":2}"#.to_owned()),
                (LogLevel::Warn, "TypeError: bad Symbol(s) [Function]".to_owned()),
            ]
        );

        // The runtime reuses the budget per call.
        let create: Function = exports.get("create").unwrap();
        let handlers: Object = create.call(()).unwrap();
        let spin: Function = handlers.get("spin").unwrap();
        budget.arm();
        let started = Instant::now();
        let err = spin.call::<_, ()>(()).unwrap_err();
        budget.disarm();
        assert!(budget.fired());
        assert!(started.elapsed() < Duration::from_secs(1));
        let diagnostic = error_diagnostic(&ctx, err, &budget, "");
        assert!(diagnostic.message.contains("CPU budget"), "{diagnostic:?}");

        budget.arm();
        let ok: Function = handlers.get("ok").unwrap();
        assert_eq!(ok.call::<_, i32>(()).unwrap(), 7);
        budget.disarm();
        assert!(!budget.fired());
    });
}

#[test]
fn disarmed_budget_never_interrupts() {
    let budget = CpuBudget::new(Duration::ZERO);
    assert!(!budget.should_interrupt());
    budget.arm();
    assert!(budget.should_interrupt());
    assert!(budget.fired());
    budget.disarm();
    assert!(!budget.should_interrupt());
    assert!(budget.fired());
    budget.arm();
    assert!(!budget.clone().fired());
}

#[test]
fn stack_frames_are_parsed() {
    let frame = first_module_frame("    at <module>:3:11\n");
    assert_eq!(frame, Some(Frame { line: 3, column: 11, is_parse_error: true }));
    let frame = first_module_frame("    at parse (native)\n    at <eval> (<module>:2:11)\n");
    assert_eq!(frame, Some(Frame { line: 2, column: 11, is_parse_error: false }));
    assert_eq!(first_module_frame("    at <input>:1:1\n"), None);
}

/// Runs `setup` (not timed) then `spin` in a fresh runtime, cancels the
/// budget from another thread after `after`, and returns how long `spin`
/// went on past the cancellation.
fn overrun_after_cancel(setup: &str, spin: &str, after: Duration) -> Duration {
    let limits = JsLimits { cpu_budget: Duration::from_secs(600), ..JsLimits::default() };
    let (_runtime, context, budget) = new_runtime(&limits).unwrap();
    context.with(|ctx| {
        let _armed = budget.armed();
        ctx.eval::<(), _>(setup).unwrap();
        let canceller = {
            let budget = budget.clone();
            std::thread::spawn(move || {
                std::thread::sleep(after);
                budget.cancel();
                Instant::now()
            })
        };
        let err = ctx.eval::<(), _>(spin).unwrap_err();
        let ended = Instant::now();
        let cancelled_at = canceller.join().unwrap();
        let diagnostic = error_diagnostic(&ctx, err, &budget, "");
        assert!(diagnostic.message.contains("cancelled"), "{spin}: {diagnostic:?}");
        ended.saturating_duration_since(cancelled_at)
    })
}

/// The bundled engine is patched (vendor/patches/quickjs-interrupt-polls.patch)
/// so that the native loops of generic array built-ins and of sorts poll the
/// interrupt handler: each of these would otherwise run for minutes (or,
/// over 2^53-1 indexes, for ever) without returning to JS.
#[test]
fn native_loops_of_built_ins_are_interruptible() {
    let huge = "var o = { length: 2 ** 53 - 1 };";
    let cases = [
        ("", "Array.prototype.reverse.call({ length: 2 ** 53 - 1 })"),
        (huge, "Array.prototype.copyWithin.call(o, 0, 1)"),
        (huge, "Array.prototype.lastIndexOf.call(o, 1)"),
        (huge, "Array.prototype.includes.call(o, 1)"),
        (huge, "Array.prototype.indexOf.call(o, 1)"),
        ("var o = { length: 2 ** 32 - 1 };", "Array.prototype.join.call(o, '')"),
        ("var a = []; for (let i = 0; i < 1e6; i++) a.push((i * 7919) % 1e6);", "for (;;) { a.sort(); a.reverse(); }"),
        (
            "var t = new Float64Array(2e6); for (let i = 0; i < t.length; i++) t[i] = (i * 7919) % 2e6;",
            "for (;;) { t.sort(); t.reverse(); }",
        ),
    ];
    for (setup, spin) in cases {
        let overrun = overrun_after_cancel(setup, spin, Duration::from_millis(200));
        assert!(overrun < Duration::from_millis(500), "{spin} ran {overrun:?} past its cancellation");
    }
}

/// Getters run while an error is formatted count against the budget of the
/// call that threw, at upload (module evaluation) as anywhere else.
#[test]
fn getters_run_while_formatting_an_error_are_bounded() {
    let limits = JsLimits { cpu_budget: Duration::from_millis(100), ..JsLimits::default() };
    for source in [
        "throw { get message() { for (;;) {} } };",
        "const e = new Error('x'); Object.defineProperty(e, 'name', { get() { for (;;) {} } }); throw e;",
        "throw { toJSON() { for (;;) {} } };",
        "Object.defineProperty(module, 'exports', { get() { for (;;) {} } });",
        "module.exports = { metadata: { toJSON() { for (;;) {} } }, create() {} };",
        "module.exports = { metadata: {}, get create() { for (;;) {} } };",
    ] {
        let started = Instant::now();
        let diagnostics = inspect_module(source.as_bytes(), &limits).unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(1100), "{source}: {:?}", started.elapsed());
        assert!(diagnostics.iter().any(|d| d.message.contains("CPU budget")), "{source}: {diagnostics:?}");
    }
}

/// A module declaring `fields` int config fields `f0`, `f1`, ….
fn module_with_config_fields(fields: usize) -> String {
    format!(
        r#"module.exports = {{
  metadata: {{
    name: "wide", displayName: "Wide", events: ["Trade"],
    config: Array.from({{ length: {fields} }}, (_, i) => ({{ name: "f" + i, type: "int", default: i }})),
  }},
  create() {{ return {{}}; }},
}};"#
    )
}

#[test]
fn config_fields_are_bounded_at_256() {
    let metadata = inspect(&module_with_config_fields(MAX_CONFIG_FIELDS)).expect("256 fields are accepted");
    assert_eq!(metadata.config.len(), MAX_CONFIG_FIELDS + 1, "256 declared + dry_run");

    let diagnostic = single(&module_with_config_fields(MAX_CONFIG_FIELDS + 1));
    assert_eq!(diagnostic.stage, DiagnosticStage::Validation);
    assert_eq!(diagnostic.hint.as_deref(), Some("metadata.config"));
    assert_eq!(diagnostic.message, "metadata.config declares 257 fields; a module may declare at most 256");
}

#[test]
fn a_huge_config_is_refused_with_one_diagnostic() {
    // 50,000 fields used to be checked pairwise for duplicate names
    // (~100 s at 100k). Now the count is refused before any entry is read.
    let diagnostic = single(&module_with_config_fields(50_000));
    assert_eq!(diagnostic.hint.as_deref(), Some("metadata.config"));
    assert!(diagnostic.message.starts_with("metadata.config declares 50000 fields"), "{}", diagnostic.message);

    // Duplicate names within the bound are found with a set: every
    // repetition is reported once, in one pass.
    let entries: Vec<serde_json::Value> =
        (0..MAX_CONFIG_FIELDS).map(|_| json!({"name": "same", "type": "int"})).collect();
    let metadata = json!({"name": "wide", "displayName": "Wide", "events": ["Trade"], "config": entries});
    let diagnostics = validate::validate_exports(Ok(Some(metadata)), Ok(true)).unwrap_err();
    assert_eq!(diagnostics.len(), MAX_CONFIG_FIELDS - 1, "every repetition of \"same\"");
    assert!(diagnostics[0].message.contains("duplicate config field name \"same\""), "{:?}", diagnostics[0]);
}
