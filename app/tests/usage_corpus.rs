//! Recorded usage objects (`usage_corpus.json`), each read by its protocol's
//! parser and charged line by line, against the table of expected tokens and
//! micro-coins.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use app::domain::explain::{explain, Recorded};
use app::domain::outcome::CallOutcome;
use app::domain::pricing::{Breakdown, Price};
use app::domain::usage::Usage;
use serde_json::Value;

fn corpus() -> Value {
    let text = include_str!("usage_corpus.json");
    serde_json::from_str(text).expect("usage_corpus.json is JSON")
}

fn numbers(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("a list of numbers")
        .iter()
        .map(|n| n.as_i64().expect("an integer"))
        .collect()
}

fn price(p: &Value) -> Price {
    let rate = |k: &str| p[k].as_i64().expect("a rate in micro-coins");
    Price {
        input_micro: rate("input"),
        output_micro: rate("output"),
        request_micro: rate("request"),
        cached_input_micro: rate("cached_input"),
        cache_write_micro: rate("cache_write"),
    }
}

fn parse(parser: &str, usage: &Value) -> Option<Usage> {
    match parser {
        "openai" => Usage::from_openai(usage),
        "responses" => Usage::from_responses(usage),
        "anthropic" => Usage::from_anthropic(usage),
        other => panic!("unknown parser {other}"),
    }
}

fn as_row(u: &Usage) -> Vec<i64> {
    [
        u.input,
        u.cached_input,
        u.cache_write,
        u.output,
        u.reasoning,
    ]
    .map(|n| i64::try_from(n).unwrap())
    .to_vec()
}

fn lines_row(b: &Breakdown) -> Vec<i64> {
    vec![
        b.input,
        b.cached_input,
        b.cache_write,
        b.output,
        b.request,
        b.total(),
    ]
}

#[test]
fn every_recorded_usage_is_read_and_charged_as_the_table_says() {
    let corpus = corpus();
    let price = price(&corpus["price"]);
    let distinct: std::collections::BTreeSet<i64> = [
        price.input_micro,
        price.cached_input_micro,
        price.cache_write_micro,
        price.output_micro,
    ]
    .into();
    assert_eq!(distinct.len(), 4, "every token kind has its own rate");

    let cases = corpus["cases"].as_array().unwrap();
    let mut charged = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let parser = case["parser"].as_str().unwrap();
        let usage = case.get("usage").cloned().unwrap_or(Value::Null);
        let got = parse(parser, &usage);
        let Some(tokens) = case.get("tokens") else {
            assert_eq!(got, None, "{name}: no usage to read");
            continue;
        };
        let u = got.unwrap_or_else(|| panic!("{name}: the usage was not read"));
        assert_eq!(as_row(&u), numbers(tokens), "{name}: tokens");
        let lines = price.charge(&u);
        assert_eq!(lines_row(&lines), numbers(&case["micro"]), "{name}: micro");

        // The console's explanation adds up to the same total.
        let recorded = Recorded {
            cost: lines.total(),
            overage: 0,
            coins: lines.total(),
            code: Some(CallOutcome::Ok),
        };
        let e = explain(&u, &lines, recorded);
        assert_eq!(e.total, lines.total(), "{name}: explained total");
        assert!(!e.differs() && e.notes.is_empty(), "{name}: {e:?}");
        charged += 1;
    }
    assert!(
        charged >= 14 && cases.len() > charged,
        "the corpus is whole"
    );
}
