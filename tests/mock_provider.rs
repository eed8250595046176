//! Self-test of the mock OpenAI embeddings server in `support::mock_provider`: the rest of the
//! suite trusts it to behave like OpenAI on the wire, so this checks it with a plain HTTP
//! client (reqwest), independently of embedq's own provider client.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::mock_provider::{MockProvider, MockScript, openai_duration};

const MODEL: &str = "text-embedding-3-small";

/// One response, with the body both raw and parsed (`Null` when it is not JSON).
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    fn error_code(&self) -> &Value {
        &self.body["error"]["code"]
    }
}

async fn post(
    client: &reqwest::Client,
    mock: &MockProvider,
    key: Option<&str>,
    body: String,
) -> Reply {
    let mut request = client
        .post(format!("{}/embeddings", mock.base_url()))
        .header("content-type", "application/json")
        .body(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("reach the mock provider");
    let (status, headers) = (response.status(), response.headers().clone());
    let text = response.text().await.expect("read the body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        body,
    }
}

async fn embed(client: &reqwest::Client, mock: &MockProvider, input: Value) -> Reply {
    post(
        client,
        mock,
        None,
        json!({ "model": MODEL, "input": input }).to_string(),
    )
    .await
}

fn tokens(text: &str) -> u64 {
    tiktoken_rs::cl100k_base_singleton()
        .encode_ordinary(text)
        .len() as u64
}

fn floats(embedding: &Value) -> Vec<f32> {
    let values = embedding.as_array().expect("a float array");
    values
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

fn decode_base64(embedding: &Value) -> Vec<f32> {
    let bytes = BASE64
        .decode(embedding.as_str().expect("a base64 string"))
        .expect("valid base64");
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// What a careful client checks before trusting a 200.
fn well_formed(reply: &Reply, inputs: usize, dimension: usize) -> bool {
    let Some(data) = reply.body["data"].as_array() else {
        return false;
    };
    data.len() == inputs
        && data.iter().enumerate().all(|(i, item)| {
            item["index"] == i
                && item["embedding"].as_array().is_some_and(|values| {
                    values.len() == dimension
                        && values
                            .iter()
                            .all(|x| x.as_f64().is_some_and(f64::is_finite))
                })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn float_and_base64_return_the_deterministic_vectors_in_order() {
    let mock = MockProvider::start(MockScript::default()).await;
    let client = reqwest::Client::new();
    let texts = ["hello world", "the quick brown fox", "hello world"];

    let float = embed(&client, &mock, json!(texts)).await;
    assert_eq!(float.status, StatusCode::OK, "{}", float.text);
    assert_eq!(float.body["object"], "list");
    assert_eq!(float.body["model"], MODEL);
    let expected_tokens: u64 = texts.iter().map(|t| tokens(t)).sum();
    assert_eq!(
        float.body["usage"],
        json!({ "prompt_tokens": expected_tokens, "total_tokens": expected_tokens })
    );
    for (i, text) in texts.iter().enumerate() {
        let item = &float.body["data"][i];
        assert_eq!(
            (item["object"].as_str(), item["index"].as_u64()),
            (Some("embedding"), Some(i as u64))
        );
        assert_eq!(
            floats(&item["embedding"]),
            MockProvider::vector_for(text, 8)
        );
    }

    let body = json!({ "model": MODEL, "input": texts, "encoding_format": "base64" });
    let base64 = post(&client, &mock, None, body.to_string()).await;
    assert_eq!(base64.status, StatusCode::OK, "{}", base64.text);
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(
            decode_base64(&base64.body["data"][i]["embedding"]),
            MockProvider::vector_for(text, 8)
        );
    }

    let single = embed(&client, &mock, json!("hello world")).await;
    assert_eq!(
        floats(&single.body["data"][0]["embedding"]),
        MockProvider::vector_for("hello world", 8)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_are_unit_length_and_dimensions_shorten_them() {
    let long = MockProvider::vector_for("some text", 8);
    let norm: f32 = long.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    assert_ne!(long, MockProvider::vector_for("other text", 8));

    let mock = MockProvider::start(MockScript::default()).await;
    let client = reqwest::Client::new();
    let body = json!({ "model": MODEL, "input": "some text", "dimensions": 4 });
    let short = post(&client, &mock, None, body.to_string()).await;
    let short = floats(&short.body["data"][0]["embedding"]);
    assert_eq!(short, MockProvider::vector_for("some text", 4));
    let prefix_norm: f32 = long[..4].iter().map(|x| x * x).sum::<f32>().sqrt();
    for (s, l) in short.iter().zip(&long) {
        assert!(
            (s - l / prefix_norm).abs() < 1e-5,
            "a shortened vector is the cut, renormalized"
        );
    }

    let body = json!({ "model": MODEL, "input": "some text", "dimensions": 9 });
    let too_many = post(&client, &mock, None, body.to_string()).await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
    assert_eq!(too_many.body["error"]["param"], "dimensions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_api_key_is_401_until_the_script_accepts_it() {
    let script = MockScript {
        api_key: Some("sk-right-key-0001".into()),
        ..MockScript::default()
    };
    let mock = MockProvider::start(script.clone()).await;
    let client = reqwest::Client::new();
    let body = json!({ "model": MODEL, "input": "hi" }).to_string();

    let wrong = post(&client, &mock, Some("sk-wrong-key-9999"), body.clone()).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body["error"]["type"], "invalid_request_error");
    assert_eq!(*wrong.error_code(), "invalid_api_key");
    let message = wrong.body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Incorrect API key provided: sk-"),
        "{message}"
    );
    assert!(
        !message.contains("sk-wrong-key-9999"),
        "the key is never echoed: {message}"
    );

    let missing = post(&client, &mock, None, body.clone()).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);

    mock.set_script(MockScript {
        api_key: Some("sk-wrong-key-9999".into()),
        ..script
    });
    let fixed = post(&client, &mock, Some("sk-wrong-key-9999"), body).await;
    assert_eq!(fixed.status, StatusCode::OK, "{}", fixed.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_429s_carries_retry_headers_then_passes() {
    let mock = MockProvider::start(MockScript {
        storm_429: 2,
        ..MockScript::default()
    })
    .await;
    let client = reqwest::Client::new();
    for remaining in [1, 0] {
        let limited = embed(&client, &mock, json!("hi")).await;
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(*limited.error_code(), "rate_limit_exceeded");
        assert_eq!(limited.body["error"]["type"], "requests");
        let retry_ms: u64 = limited
            .header("retry-after-ms")
            .expect("retry-after-ms")
            .parse()
            .unwrap();
        let retry_s: u64 = limited
            .header("retry-after")
            .expect("retry-after")
            .parse()
            .unwrap();
        assert!(
            retry_ms > 0 && retry_s * 1000 >= retry_ms,
            "{retry_ms} ms, {retry_s} s"
        );
        assert_eq!(mock.script().storm_429, remaining);
    }
    assert_eq!(
        embed(&client, &mock, json!("hi")).await.status,
        StatusCode::OK
    );

    mock.set_script(MockScript {
        storm_429: 1,
        retry_after_on_429: false,
        ..MockScript::default()
    });
    let bare = embed(&client, &mock, json!("hi")).await;
    assert_eq!(bare.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        (bare.header("retry-after-ms"), bare.header("retry-after")),
        (None, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_quota_is_a_429_without_retry_headers() {
    let mock = MockProvider::start(MockScript {
        insufficient_quota: true,
        ..MockScript::default()
    })
    .await;
    let reply = embed(&reqwest::Client::new(), &mock, json!("hi")).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let expected = json!({ "error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "param": null,
        "code": "insufficient_quota",
    }});
    assert_eq!(reply.body, expected);
    assert_eq!(
        (reply.header("retry-after-ms"), reply.header("retry-after")),
        (None, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_400_like_openai() {
    let mock = MockProvider::start(MockScript::default()).await;
    let client = reqwest::Client::new();

    let long = "hello ".repeat(9000);
    let over = embed(&client, &mock, json!(["short", long])).await;
    assert_eq!(over.status, StatusCode::BAD_REQUEST);
    assert_eq!(over.body["error"]["type"], "invalid_request_error");
    let expected = format!(
        "This model's maximum context length is 8192 tokens, however you requested {n} tokens \
         ({n} in your prompt; 0 for the completion). Please reduce your prompt; or completion \
         length.",
        n = tokens(&long)
    );
    assert_eq!(over.body["error"]["message"], expected);

    mock.set_script(MockScript {
        max_inputs_per_request: 2,
        max_tokens_per_request: 5,
        ..MockScript::default()
    });
    let too_many = embed(&client, &mock, json!(["a", "b", "c"])).await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
    assert!(
        too_many.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("'$.input' is invalid")
    );

    let too_big = embed(&client, &mock, json!(["one two three", "four five six"])).await;
    assert_eq!(too_big.status, StatusCode::BAD_REQUEST);
    assert_eq!(*too_big.error_code(), "max_tokens_per_request");
    assert_eq!(
        too_big.body["error"]["message"],
        "Requested 6 tokens, max 5 tokens per request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_400_invalid_request_error() {
    let mock = MockProvider::start(MockScript::default()).await;
    let client = reqwest::Client::new();
    let bodies = [
        "{not json".to_string(),
        json!({ "model": MODEL }).to_string(),
        json!({ "model": MODEL, "input": "" }).to_string(),
        json!({ "model": MODEL, "input": [] }).to_string(),
        json!({ "model": MODEL, "input": ["ok", 3] }).to_string(),
        json!({ "model": MODEL, "input": "ok", "encoding_format": "int8" }).to_string(),
        json!({ "input": "ok" }).to_string(),
    ];
    for body in bodies {
        let reply = post(&client, &mock, None, body.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        let error = &reply.body["error"];
        assert_eq!(error["type"], "invalid_request_error", "{body}");
        assert!(
            error["message"].is_string()
                && error.get("param").is_some()
                && error.get("code").is_some()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_minute_limits_a_burst() {
    let mock = MockProvider::start(MockScript {
        requests_per_minute: Some(3),
        ..MockScript::default()
    })
    .await;
    let client = reqwest::Client::new();
    for remaining in ["2", "1", "0"] {
        let ok = embed(&client, &mock, json!("hi")).await;
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(ok.header("x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(ok.header("x-ratelimit-remaining-requests"), Some(remaining));
        assert!(
            ok.header("x-ratelimit-reset-requests")
                .unwrap()
                .ends_with('s')
        );
        assert_eq!(
            ok.header("x-ratelimit-limit-tokens"),
            None,
            "no token limit configured"
        );
    }
    for _ in 0..2 {
        let limited = embed(&client, &mock, json!("hi")).await;
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.header("x-ratelimit-remaining-requests"), Some("0"));
        let retry_ms: u64 = limited.header("retry-after-ms").unwrap().parse().unwrap();
        assert!((55_000..=60_000).contains(&retry_ms), "{retry_ms}");
        assert_eq!(limited.header("retry-after"), Some("60"));
        assert_eq!(limited.body["error"]["type"], "requests");
        assert_eq!(*limited.error_code(), "rate_limit_exceeded");
        let message = limited.body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("Rate limit reached for"), "{message}");
        assert!(
            message.contains("Limit 3, Used 3, Requested 1"),
            "a refused request counts for nothing"
        );
    }

    let concurrent = MockProvider::start(MockScript {
        requests_per_minute: Some(3),
        ..MockScript::default()
    })
    .await;
    let url = concurrent.base_url();
    let burst: Vec<_> = (0..6)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let body = json!({ "model": MODEL, "input": "hi" });
                client
                    .post(format!("{url}/embeddings"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in burst {
        statuses.push(request.await.unwrap().as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_per_minute_limits_tokens() {
    let mock = MockProvider::start(MockScript {
        tokens_per_minute: Some(5),
        ..MockScript::default()
    })
    .await;
    let client = reqwest::Client::new();
    assert_eq!(tokens("hello world"), 2);
    let first = embed(&client, &mock, json!("hello world")).await;
    assert_eq!(first.header("x-ratelimit-remaining-tokens"), Some("3"));
    embed(&client, &mock, json!("hello world")).await;

    let limited = embed(&client, &mock, json!("hello world")).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.body["error"]["type"], "tokens");
    assert_eq!(limited.header("x-ratelimit-remaining-tokens"), Some("1"));
    assert!(limited.header("retry-after-ms").is_some());

    let too_large = embed(&client, &mock, json!("one two three four five six")).await;
    assert_eq!(too_large.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        too_large.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Request too large for")
    );
    assert_eq!(
        too_large.header("retry-after-ms"),
        None,
        "waiting would never help"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_counts_requests_statuses_and_duplicates() {
    let script = MockScript {
        api_key: Some("sk-test-key-0001".into()),
        ..MockScript::default()
    };
    let mock = MockProvider::start(script).await;
    let client = reqwest::Client::new();
    let key = Some("sk-test-key-0001");
    for input in [json!(["a", "b"]), json!("a"), json!(["c", "a"])] {
        let body = json!({ "model": MODEL, "input": input }).to_string();
        assert_eq!(post(&client, &mock, key, body).await.status, StatusCode::OK);
    }
    post(&client, &mock, key, "{".into()).await;
    post(
        &client,
        &mock,
        Some("sk-nope-nope-nope"),
        json!({ "model": MODEL, "input": "d" }).to_string(),
    )
    .await;

    let audit = mock.audit();
    assert_eq!(audit.requests, 5);
    let by_status = BTreeMap::from([(200, 3), (400, 1), (401, 1)]);
    assert_eq!(audit.by_status, by_status);
    assert_eq!(
        (
            audit.embedded["a"],
            audit.embedded["b"],
            audit.embedded["c"]
        ),
        (3, 1, 1)
    );
    assert!(!audit.embedded.contains_key("d"));
    assert_eq!(audit.duplicates(), 2);
    assert_eq!((audit.inputs_embedded, audit.tokens_embedded), (5, 5));
    assert_eq!(Vec::from_iter(&audit.models), [MODEL]);
    assert_eq!(audit.request_times_ms.len(), 5);
    assert!(audit.request_times_ms.is_sorted());
    assert_eq!(audit.max_concurrent, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_faults_server_errors_hangs_and_broken_bodies() {
    let errors = MockScript {
        server_error_ratio: 1.0,
        ..MockScript::default()
    };
    let mock = MockProvider::start(errors.clone()).await;
    let client = reqwest::Client::new();
    let mut runs = Vec::new();
    for _ in 0..2 {
        mock.set_script(errors.clone());
        let mut statuses = Vec::new();
        for _ in 0..6 {
            let reply = embed(&client, &mock, json!("hi")).await;
            assert_eq!(reply.body["error"]["type"], "server_error");
            assert_eq!(
                reply.body["error"]["message"],
                "The server had an error while processing your request."
            );
            statuses.push(reply.status.as_u16());
        }
        assert!(
            statuses.iter().all(|s| [500, 502, 503].contains(s)),
            "{statuses:?}"
        );
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1], "the same seed gives the same faults");

    mock.set_script(MockScript {
        bad_body_ratio: 1.0,
        ..MockScript::default()
    });
    for _ in 0..8 {
        let reply = embed(&client, &mock, json!(["x", "y"])).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(!well_formed(&reply, 2, 8), "a broken body: {}", reply.text);
    }
    assert!(
        mock.audit().embedded.is_empty(),
        "broken bodies embed nothing"
    );

    let hang_for = Duration::from_millis(150);
    mock.set_script(MockScript {
        hang_ratio: 1.0,
        hang_for,
        ..MockScript::default()
    });
    let started = Instant::now();
    let hung = embed(&client, &mock, json!("hi")).await;
    assert_eq!(hung.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() >= hang_for);

    mock.set_script(MockScript::default());
    assert!(well_formed(
        &embed(&client, &mock, json!(["x", "y"])).await,
        2,
        8
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_applies_to_concurrent_requests_in_parallel() {
    let latency = Duration::from_millis(300);
    let mock = MockProvider::start(MockScript {
        latency,
        ..MockScript::default()
    })
    .await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let requests: Vec<_> = (0..5)
        .map(|i| {
            let (client, url) = (client.clone(), mock.base_url());
            tokio::spawn(async move {
                let body = json!({ "model": MODEL, "input": format!("text {i}") });
                client
                    .post(format!("{url}/embeddings"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= latency && elapsed < latency * 3, "{elapsed:?}");
    assert_eq!(mock.audit().max_concurrent, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_mock_releases_hanging_requests_and_stops_serving() {
    let script = MockScript {
        hang_ratio: 1.0,
        ..MockScript::default()
    };
    let mock = MockProvider::start(script).await;
    let url = format!("{}/embeddings", mock.base_url());
    let hanging = tokio::spawn({
        let url = url.clone();
        async move {
            let body = json!({ "model": MODEL, "input": "hi" });
            reqwest::Client::new().post(url).json(&body).send().await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(mock.audit().requests, 1);

    let started = Instant::now();
    drop(mock);
    let released = hanging.await.unwrap().expect("an answer, not a 60 s hang");
    assert_eq!(released.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(1));

    tokio::time::sleep(Duration::from_millis(50)).await;
    let body = json!({ "model": MODEL, "input": "hi" });
    let after = reqwest::Client::new().post(url).json(&body).send().await;
    assert!(after.is_err(), "nothing listens once the mock is dropped");
}

#[test]
fn durations_are_written_like_openai() {
    let cases = [
        (Duration::ZERO, "0s"),
        (Duration::from_micros(11_200), "12ms"),
        (Duration::from_secs(1), "1s"),
        (Duration::from_millis(1_020), "1.02s"),
        (Duration::from_millis(90_500), "1m30.5s"),
        (Duration::from_secs(360), "6m0s"),
        (Duration::from_secs(3_600), "1h0m0s"),
    ];
    for (duration, expected) in cases {
        assert_eq!(openai_duration(duration), expected);
    }
}
