//! Documents: a file in (PDF, HTML, Markdown, text), its chunks out as items `{doc}#{n}` with
//! their page, heading path and character range; re-ingesting a changed document embeds only
//! the changed chunks (the mock's audit counts them) and deletes the vanished ones with their
//! points; an unchanged one costs no call; a corrupt, encrypted, image-only, oversize or
//! unknown file gets a 4xx and leaves nothing behind. Fixtures: tests/data/documents (made by
//! its make_pdfs.py).

mod support;

#[path = "support/local_model.rs"]
mod local_model_files;

use embedq::domain::ItemId;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use support::mock_provider::MockProvider;
use support::{Backend, TestApp, app_with, script};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/documents")
            .join(name),
    )
    .unwrap()
}

async fn upload(app: &TestApp, query: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let r = app
        .http
        .post(app.url(&format!("/v1/contexts/ctx/documents?{query}")))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn point_exists(app: &TestApp, id: &str) -> bool {
    let id = ItemId::parse(id).unwrap();
    !app.vectors.get(&[id]).await.unwrap().is_empty()
}

fn section(title: &str, word: &str, n: usize) -> String {
    format!(
        "## {title}\n\n{}\n\n",
        format!("{word} sentence number. ").repeat(n)
    )
}

fn manual(sections: &[(&str, &str)]) -> String {
    let mut text = String::from("# Manual\n\n");
    for (title, word) in sections {
        text.push_str(&section(title, word, 6));
    }
    text
}

async fn a_changed_document_embeds_only_its_changed_chunks(backend: Backend) {
    let mock = MockProvider::start(script()).await;
    let app = app_with(backend, &mock, |_| {}).await;
    let first = manual(&[
        ("Install", "alpha"),
        ("Use", "beta"),
        ("Flags", "gamma"),
        ("Faq", "delta"),
    ]);
    let query =
        "document_id=manual&chunk_tokens=40&overlap_tokens=0&metadata=%7B%22lang%22%3A%22en%22%7D";
    let (status, body) = upload(&app, query, "text/markdown", first.into_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "markdown");
    let chunks = body["chunks"].as_u64().unwrap();
    assert!(chunks >= 4, "{body}");
    assert_eq!(body["created"], chunks);
    let job = body["job_id"].as_str().unwrap().to_owned();
    let done = app.wait_finished(&job, Duration::from_secs(30)).await;
    assert_eq!(
        (&done["state"], &done["completed"]),
        (&json!("COMPLETED"), &json!(chunks)),
        "{done}"
    );
    assert_eq!(
        mock.audit().inputs_embedded,
        chunks,
        "each chunk embedded once"
    );
    for n in 0..chunks {
        assert!(
            point_exists(&app, &format!("manual#{n}")).await,
            "chunk {n} has a point"
        );
    }
    let (_, chunk) = app.get("/v1/items/manual%231").await;
    let meta = &chunk["metadata"];
    assert_eq!(meta["document_id"], "manual", "{chunk}");
    assert_eq!(
        meta["lang"], "en",
        "the caller's metadata reaches every chunk: {chunk}"
    );
    assert_eq!(meta["heading_path"][0], "Manual", "{chunk}");
    assert!(
        meta["char_end"].as_u64() > meta["char_start"].as_u64(),
        "{chunk}"
    );

    // The same document again: nothing to embed, no job.
    let again = manual(&[
        ("Install", "alpha"),
        ("Use", "beta"),
        ("Flags", "gamma"),
        ("Faq", "delta"),
    ]);
    let (status, body) = upload(&app, query, "text/markdown", again.into_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["unchanged"], &body["job_id"]),
        (&json!(chunks), &Value::Null),
        "{body}"
    );
    assert_eq!(
        mock.audit().inputs_embedded,
        chunks,
        "an unchanged document costs no call"
    );
    // A chunk left PENDING (an earlier upload stored it, then its job could not be queued)
    // is embedded by the next upload even though nothing changed.
    sqlx::query("UPDATE items SET status = 'PENDING' WHERE id = 'manual#1'")
        .execute(app.store.pool())
        .await
        .unwrap();
    let again = manual(&[
        ("Install", "alpha"),
        ("Use", "beta"),
        ("Flags", "gamma"),
        ("Faq", "delta"),
    ]);
    let (status, body) = upload(&app, query, "text/markdown", again.into_bytes()).await;
    assert_eq!(status, 200, "{body}");
    let job = body["job_id"]
        .as_str()
        .expect("a job for the waiting chunk")
        .to_owned();
    let done = app.wait_finished(&job, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "COMPLETED", "{done}");
    let (_, item) = app.get("/v1/items/manual%231").await;
    assert_eq!(item["status"], "COMPLETED", "{item}");
    assert_eq!(
        mock.audit().inputs_embedded,
        chunks + 1,
        "only the waiting chunk"
    );
    let calls = mock.audit().requests;
    let before = mock.audit().inputs_embedded;

    // One section changed, the last one gone.
    let changed = manual(&[("Install", "alpha"), ("Use", "epsilon"), ("Flags", "gamma")]);
    let (status, body) = upload(&app, query, "text/markdown", changed.into_bytes()).await;
    assert_eq!(status, 200, "{body}");
    let now = body["chunks"].as_u64().unwrap();
    let embedded = body["created"].as_u64().unwrap() + body["changed"].as_u64().unwrap();
    assert!(embedded >= 1 && embedded < now, "only what changed: {body}");
    assert_eq!(body["removed"].as_u64().unwrap(), chunks - now, "{body}");
    let job = body["job_id"].as_str().unwrap().to_owned();
    let done = app.wait_finished(&job, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert!(mock.audit().requests > calls);
    assert_eq!(
        mock.audit().inputs_embedded,
        before + embedded,
        "the mock embedded the changed chunks only"
    );
    assert!(mock.audit().embedded.keys().any(|t| t.contains("epsilon")));
    for n in now..chunks {
        let (status, _) = app.get(&format!("/v1/items/manual%23{n}")).await;
        assert_eq!(status, 404, "vanished chunk {n} is gone");
        assert!(
            !point_exists(&app, &format!("manual#{n}")).await,
            "vanished chunk {n} has no point"
        );
    }

    // A chunk id is not the producer's to write; the document is deleted whole.
    let (status, body) = app
        .post_json(
            "/v1/contexts/ctx/items",
            &json!({"items": [{"id": "manual#0", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let r = app
        .http
        .delete(app.url("/v1/documents/manual"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["deleted"], now, "{body}");
    assert_eq!(app.item_count().await, 0);
    for n in 0..chunks {
        assert!(
            !point_exists(&app, &format!("manual#{n}")).await,
            "chunk {n} point removed"
        );
    }
    let r = app
        .http
        .delete(app.url("/v1/documents/manual"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_document_embeds_only_its_changed_chunks_postgres() {
    a_changed_document_embeds_only_its_changed_chunks(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_document_embeds_only_its_changed_chunks_sqlite() {
    a_changed_document_embeds_only_its_changed_chunks(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_keeps_its_structure_and_loses_its_boilerplate() {
    let mock = MockProvider::start(script()).await;
    let app = app_with(Backend::Sqlite, &mock, |_| {}).await;
    let html = "<!DOCTYPE html><html><head><title>Shop</title><script>var t=1;</script></head><body>\
        <nav><a href='/'>Home</a><a href='/cart'>Cart</a></nav>\
        <h1>Help</h1><h2>Returns</h2><p>Send the parcel back within thirty days.</p>\
        <h2>Refunds</h2><p>Refunds reach your card in five working days.</p>\
        <footer>Copyright Shop Ltd</footer></body></html>";
    let (status, body) = upload(
        &app,
        "document_id=help&chunk_tokens=12&overlap_tokens=0",
        "text/html",
        html.into(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "html");
    let job = body["job_id"].as_str().unwrap().to_owned();
    app.wait_finished(&job, Duration::from_secs(30)).await;
    let texts: Vec<String> = mock.audit().embedded.keys().cloned().collect();
    assert!(texts.iter().any(|t| t.contains("thirty days")), "{texts:?}");
    for gone in ["Cart", "Copyright", "var t"] {
        assert!(
            !texts.iter().any(|t| t.contains(gone)),
            "{gone} in {texts:?}"
        );
    }
    let mut refunds = None;
    for n in 0..body["chunks"].as_u64().unwrap() {
        let (_, item) = app.get(&format!("/v1/items/help%23{n}")).await;
        if item["metadata"]["heading_path"] == json!(["Help", "Refunds"]) {
            refunds = Some(item);
        }
    }
    assert!(refunds.is_some(), "a chunk under Help › Refunds");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_documents_are_refused_and_leave_nothing() {
    let mock = MockProvider::start(script()).await;
    let app = app_with(Backend::Sqlite, &mock, |s| {
        s.documents.max_bytes = 4_000;
        s.documents.max_chunks = 3;
    })
    .await;
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "document_id=d",
            "application/pdf",
            fixture("corrupt.pdf"),
            422,
            "cannot be read",
        ),
        (
            "document_id=d",
            "application/pdf",
            fixture("encrypted.pdf"),
            422,
            "cannot be read",
        ),
        (
            "document_id=d",
            "application/pdf",
            fixture("image-only.pdf"),
            422,
            "no text",
        ),
        (
            "document_id=d",
            "text/plain",
            vec![b'a'; 5_000],
            413,
            "documents.max_bytes",
        ),
        (
            "document_id=d",
            "application/octet-stream",
            png.clone(),
            422,
            "not a PDF",
        ),
        (
            "document_id=d",
            "image/png",
            b"hello".to_vec(),
            415,
            "unsupported",
        ),
        (
            "document_id=d",
            "text/markdown",
            fixture("three-pages.pdf"),
            422,
            "declared markdown",
        ),
        (
            "document_id=d&chunk_tokens=8&overlap_tokens=0",
            "text/plain",
            "one two three four five six seven eight. "
                .repeat(10)
                .into_bytes(),
            422,
            "max_chunks",
        ),
        (
            "document_id=d&type=pdf",
            "application/octet-stream",
            b"[0]".to_vec(),
            422,
            "declared pdf",
        ),
        (
            "document_id=a%23b",
            "text/plain",
            b"hello".to_vec(),
            400,
            "document id",
        ),
        (
            "document_id=d&chunk_tokens=1000000",
            "text/plain",
            b"hello".to_vec(),
            422,
            "chunk_tokens",
        ),
        (
            "document_id=d&metadata=%5B1%5D",
            "text/plain",
            b"hello".to_vec(),
            422,
            "metadata",
        ),
        (
            "document_id=d",
            "text/plain",
            b"   \n ".to_vec(),
            422,
            "no text",
        ),
        (
            "chunk_tokens=40",
            "text/plain",
            b"hello".to_vec(),
            400,
            "document_id",
        ),
    ];
    for (query, content_type, body, status, reason) in cases {
        let (got, answer) = upload(&app, query, content_type, body).await;
        assert_eq!(got, status, "{query} {content_type}: {answer}");
        let text = answer["error"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase();
        assert!(
            text.contains(&reason.to_lowercase()),
            "{query} {content_type}: {answer}"
        );
    }
    assert_eq!(app.item_count().await, 0, "nothing was stored");
    assert_eq!(app.job_count().await, 0, "no job was made");
    assert_eq!(mock.audit().requests, 0, "no API call");
    // The daemon still serves.
    let (status, body) = upload(
        &app,
        "document_id=ok",
        "text/plain",
        b"A fine short text.".to_vec(),
    )
    .await;
    assert_eq!((status, &body["chunks"]), (200, &json!(1)), "{body}");
    app.stop().await;
}

/// The PDF's chunks know their pages, and the local model finds the chunk holding a sentence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdf_chunks_know_their_pages_and_search_finds_them() {
    // Fetched first when missing (as `embedq fetch-model` does); never skipped.
    let model_dir = local_model_files::required_model_dir()
        .display()
        .to_string();
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.embedding.provider = embedq::config::Provider::Local;
        s.embedding.model = embedq::config::LOCAL_MODEL.into();
        s.embedding.dimension = embedq::config::LOCAL_DIMENSION;
        s.embedding.model_dir = model_dir.clone();
    })
    .await;
    let (status, body) = upload(
        &app,
        "document_id=tales&chunk_tokens=24&overlap_tokens=0",
        "application/pdf",
        fixture("three-pages.pdf"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["type"], &body["pages"]),
        (&json!("pdf"), &json!(3)),
        "{body}"
    );
    let job = body["job_id"].as_str().unwrap().to_owned();
    let done = app.wait_finished(&job, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "COMPLETED", "{done}");
    let known = [("lighthouse keeper", 1), ("mackerel", 2), ("lightning", 3)];
    for n in 0..body["chunks"].as_u64().unwrap() {
        let (_, item) = app.get(&format!("/v1/items/tales%23{n}")).await;
        let page = item["metadata"]["page"].as_u64().unwrap();
        assert!((1..=3).contains(&page), "{item}");
    }
    for (query, page) in [
        ("How many ships does the lighthouse keeper count?", 1),
        ("What does a pound of mackerel cost at the market?", 2),
        ("Which tree did the lightning hit?", 3),
    ] {
        let (status, answer) = app
            .post_json("/v1/contexts/ctx/search", &json!({"query": query, "k": 1}))
            .await;
        assert_eq!(status, 200, "{answer}");
        let hit = &answer["hits"][0];
        assert_eq!(hit["metadata"]["page"], page, "{query}: {answer}");
        let word = known[page - 1].0;
        assert!(
            hit["content"].as_str().unwrap().contains(word),
            "{query}: {answer}"
        );
    }
    app.stop().await;
}
