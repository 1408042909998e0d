//! The dashboard at the controller's `/`: its sign-in and headers over plain HTTP, and
//! the live matrix in a real browser (Debian's headless Chromium, driven over WebDriver
//! by chromium-driver and fantoccini).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

pub(crate) const SHOP: &str = r#"
services:
  web:
    build: ./web
    run: ["python3", "app.py"]
    min_healthy_time: 0s
    port: http
    health: { http: /health, timeout: 10s }
environments:
  ci: {}
  production: { after: ci }
"#;

/// The shop with production behind an approval.
pub(crate) fn held() -> String {
    SHOP.replace(
        "production: { after: ci }",
        "production: { after: ci, approval: required }",
    )
}

/// The form token in a page (every signed-in page has the sign-out form).
pub(crate) fn csrf_of(html: &str) -> String {
    let (_, rest) = html
        .split_once(r#"name="csrf" value=""#)
        .unwrap_or_else(|| panic!("no form token in {html}"));
    rest.split('"').next().unwrap().to_owned()
}

/// Signs `token` in over plain HTTP; the cookie to send.
pub(crate) fn session_of(http: &reqwest::blocking::Client, url: &str, token: &str) -> String {
    let signed = http
        .post(format!("{url}/ui/sign-in"))
        .form(&[("token", token)])
        .send()
        .unwrap();
    assert_eq!(signed.status(), 303);
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_owned();
    cookie.split(';').next().unwrap().to_owned()
}

/// An HTTP client that follows no redirect and keeps no cookie: the test reads both.
pub(crate) fn plain() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The address `wharf ui` prints.
pub(crate) fn sign_in_address(p: &mut Project) -> String {
    let out = p.ok(&["ui"]);
    let address = stdout(&out).trim().to_owned();
    assert!(address.contains("/ui/sign-in?code="), "{}", text(&out));
    address
}

#[test]
fn the_dashboard_signs_in_once_per_address_and_guards_every_page() {
    let mut p = Project::new(SHOP, &["web"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    let base = p.controller_url();
    let http = plain();

    // Nobody signed in: the pages send to the sign-in, the stream refuses.
    let home = http.get(format!("{base}/")).send().unwrap();
    assert_eq!(home.status(), 303);
    assert_eq!(home.headers()["location"], "/ui/sign-in");
    let stream = http.get(format!("{base}/ui/events")).send().unwrap();
    assert_eq!(stream.status(), 401);
    let sign_in = http.get(format!("{base}/ui/sign-in")).send().unwrap();
    let policy = sign_in.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"),
        "{policy}"
    );

    // The address signs in once, with an HttpOnly, SameSite=Strict cookie.
    let address = sign_in_address(&mut p);
    let signed = http.get(&address).send().unwrap();
    assert_eq!(signed.status(), 303, "{:?}", signed.text());
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let again = http.get(&address).send().unwrap();
    assert_eq!(again.status(), 401, "a used address signs nobody in");
    let session = cookie.split(';').next().unwrap().to_owned();

    let page = http
        .get(format!("{base}/"))
        .header("cookie", &session)
        .send()
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().unwrap();
    assert!(html.contains(r#"id="cell-web@ci""#), "{html}");
    assert!(html.contains("v1"), "{html}");
    assert!(html.contains("This controller is open"), "{html}");
    assert!(html.len() < 100 * 1024);

    // The service's page: its instances and history per environment.
    let service = http
        .get(format!("{base}/ui/services/web"))
        .header("cookie", &session)
        .send()
        .unwrap();
    assert_eq!(service.status(), 200);
    let html = service.text().unwrap();
    assert!(
        html.contains("<h1>web</h1>") && html.contains(r#"id="env-ci""#),
        "{html}"
    );
    assert!(
        html.contains("healthy") && html.contains("succeeded"),
        "{html}"
    );
    assert!(
        !html.contains(r#"id="env-production""#),
        "nothing ran there: {html}"
    );
    let unknown = http
        .get(format!("{base}/ui/services/nope"))
        .header("cookie", &session)
        .send()
        .unwrap();
    assert!(unknown.status().is_client_error(), "{}", unknown.status());

    // A change without the page's form token is refused, and changes nothing.
    let forged = http
        .post(format!("{base}/ui/sign-out"))
        .header("cookie", &session)
        .form(&[("csrf", "forged")])
        .send()
        .unwrap();
    assert_eq!(forged.status(), 403);
    // Nor does the right token help a form posted from another site.
    let page_token = csrf_of(&html);
    let elsewhere = http
        .post(format!("{base}/ui/sign-out"))
        .header("cookie", &session)
        .header("origin", "http://elsewhere.example")
        .form(&[("csrf", page_token.as_str())])
        .send()
        .unwrap();
    assert_eq!(elsewhere.status(), 403);
    let still = http
        .get(format!("{base}/"))
        .header("cookie", &session)
        .send()
        .unwrap();
    assert_eq!(still.status(), 200, "still signed in");
}

#[test]
fn a_token_signs_in_sees_only_its_environments_and_is_signed_out_when_revoked() {
    let mut p = Project::new(SHOP, &["web"]);
    let c = crate::governance::AuthController::start(&p);
    let as_admin = |p: &mut Project, args: &[&str]| c.as_admin(p, args);
    as_admin(&mut p, &["apply"]);
    let reader = as_admin(&mut p, &["token", "issue", "reader", "--scope", "ci:read"]);
    let http = plain();

    let wrong = http
        .post(format!("{}/ui/sign-in", c.url))
        .form(&[("token", "wharf_nope_nope")])
        .send()
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.text().unwrap().contains("not known"));

    let signed = http
        .post(format!("{}/ui/sign-in", c.url))
        .form(&[("token", reader.as_str())])
        .send()
        .unwrap();
    assert_eq!(signed.status(), 303);
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_owned();
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = |session: &str| {
        http.get(format!("{}/", c.url))
            .header("cookie", session)
            .send()
            .unwrap()
    };
    let html = page(&session).text().unwrap();
    assert!(
        html.contains("signed in as <strong>reader</strong>"),
        "{html}"
    );
    assert!(html.contains(">ci</th>"), "{html}");
    assert!(
        !html.contains(">production</th>"),
        "only its grants: {html}"
    );
    assert!(!html.contains("This controller is open"));

    let id = as_admin(&mut p, &["token", "list", "--output", "json"]);
    let id = serde_json::from_str::<serde_json::Value>(&id).unwrap();
    let id = id
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "reader")
        .map(|t| {
            t["id"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| t["id"].to_string())
        })
        .unwrap();
    as_admin(&mut p, &["token", "revoke", &id]);
    let after = page(&session);
    assert_eq!(after.status(), 303, "a revoked token is signed out");
}

/// Whether Chromium and its WebDriver are here (scripts/test installs them as root);
/// a test without them skips, saying why, except in CI.
pub(crate) fn browser_ready() -> bool {
    let here = ["/usr/bin/chromium", "/usr/bin/chromedriver"]
        .iter()
        .all(|p| std::path::Path::new(p).exists());
    if !here {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI has chromium and chromium-driver (scripts/test installs them)"
        );
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "skipping: needs chromium and chromium-driver (apt-get install chromium chromium-driver)"
            );
        }
    }
    here
}

/// chromedriver on a port of its own, stopped when dropped.
pub(crate) struct WebDriver {
    child: Child,
    pub(crate) port: u16,
}

impl WebDriver {
    pub(crate) fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let driver = Self { child, port };
        let up = wait_until(Duration::from_secs(20), || {
            get(port, "/status").is_some_and(|s| s.contains("ready"))
        });
        assert!(up, "chromedriver did not start on {port}");
        driver
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where screenshots go: `target/screenshots/`, named in the test's output.
fn screenshot_path(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.png"))
}

/// A headless Chromium session through the chromedriver on `port`.
pub(crate) async fn browser_session(port: u16) -> fantoccini::Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,800"],
        }),
    );
    // chromedriver speaks plain HTTP on loopback: no TLS connector is needed.
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let mut builder = fantoccini::ClientBuilder::new(connector);
    builder.capabilities(capabilities);
    builder
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session")
}

pub(crate) async fn screenshot(client: &fantoccini::Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    let path = screenshot_path(name);
    std::fs::write(&path, png).unwrap();
    #[allow(clippy::print_stderr)]
    {
        eprintln!("screenshot: {}", path.display());
    }
}

pub(crate) async fn cell_text(client: &fantoccini::Client, id: &str) -> String {
    match client.find(fantoccini::Locator::Id(id)).await {
        Ok(cell) => cell.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[test]
fn a_deploy_from_the_cli_changes_its_cell_live_in_a_real_browser() {
    if !browser_ready() {
        return;
    }
    let mut p = Project::new(SHOP, &["web"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    let address = sign_in_address(&mut p);
    let driver = WebDriver::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = browser_session(driver.port).await;
        client.goto(&address).await.unwrap();
        assert!(cell_text(&client, "cell-web@ci").await.contains("v1"));
        let body = client.source().await.unwrap();
        assert!(body.contains("This controller is open"));
        // The stream is open once the page says so.
        let mut live = false;
        for _ in 0..200 {
            if cell_text(&client, "live").await == "live" {
                live = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(live, "the page never went live");
        screenshot(&client, "dashboard-matrix").await;
        // A mark only this load of the page has: a reload would lose it.
        client
            .execute("window.wharfMark = 'this load'; return 1;", vec![])
            .await
            .unwrap();

        p.ok(&["deploy", "web", "--env", "ci", "--version", "v2"]);
        let deployed = Instant::now();
        let mut seen = None;
        while deployed.elapsed() < Duration::from_secs(10) {
            // What `wharf status` says now: v2 alone, healthy.
            let cell = cell_text(&client, "cell-web@ci").await;
            if cell.contains("v2") && !cell.contains("v1") && cell.contains("1/1 healthy") {
                seen = Some(deployed.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seen = seen.unwrap_or_else(|| {
            panic!(
                "the cell never showed v2 alone: {:?}",
                p.instances("web", "ci")
            )
        });
        #[allow(clippy::print_stderr)]
        {
            eprintln!("the cell showed v2 {seen:?} after the deploy ended");
        }
        assert!(
            seen <= Duration::from_secs(1),
            "the cell changed {seen:?} after the deploy ended"
        );
        let mark = client
            .execute("return window.wharfMark || null;", vec![])
            .await
            .unwrap();
        assert_eq!(
            mark,
            serde_json::json!("this load"),
            "changed without a reload"
        );
        screenshot(&client, "dashboard-after-deploy").await;
        // Every page, for the record.
        let base = p.controller_url();
        for (path, name) in [
            ("/ui/services/web", "dashboard-service"),
            ("/ui/hosts", "dashboard-hosts"),
        ] {
            client.goto(&format!("{base}{path}")).await.unwrap();
            screenshot(&client, name).await;
        }
        assert!(client.source().await.unwrap().contains("<h1>Hosts</h1>"));
        client.close().await.unwrap();
    });
}

#[test]
fn a_held_promotion_is_approved_from_the_page_and_only_by_who_may() {
    let browser = browser_ready();
    let mut p = Project::new(&held(), &["web"]);
    let c = crate::governance::AuthController::start(&p);
    // The CLI of this machine is `admin`, the author; others approve.
    let approver = stdout(&p.ok(&[
        "token",
        "issue",
        "approver",
        "--scope",
        "production:approve",
        "--scope",
        "ci:read",
    ]))
    .trim()
    .to_owned();
    let reader = stdout(&p.ok(&[
        "token",
        "issue",
        "reader",
        "--scope",
        "production:read",
        "--scope",
        "ci:read",
    ]))
    .trim()
    .to_owned();
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    p.ok(&["promote", "web", "--from", "ci", "--to", "production"]);
    p.remember_env("production");
    let id = p.json(&["deployments", "--pending"])[0]["id"]
        .as_i64()
        .unwrap();
    let http = plain();

    // A reader sees the badge but no button, and its forged post is refused.
    let session = session_of(&http, &c.url, &reader);
    let page = http
        .get(format!("{}/", c.url))
        .header("cookie", &session)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains(&format!("#{id} awaits approval")), "{page}");
    assert!(!page.contains(&format!("Approve #{id}")), "{page}");
    let forged = http
        .post(format!("{}/ui/deployments/{id}/approve", c.url))
        .header("cookie", &session)
        .form(&[("csrf", csrf_of(&page).as_str())])
        .send()
        .unwrap();
    assert_eq!(forged.status(), 403);
    // Without the form token, even the approver is refused.
    let approving = session_of(&http, &c.url, &approver);
    // (as a form another site would post: everything but the token)
    let bare = http
        .post(format!("{}/ui/deployments/{id}/approve", c.url))
        .header("cookie", &approving)
        .form(&[("approve", "yes")])
        .send()
        .unwrap();
    assert_eq!(bare.status(), 403);
    assert_eq!(
        p.json(&["deployments", "--pending"])[0]["id"].as_i64(),
        Some(id),
        "still waiting"
    );
    let audit = stdout(&p.ok(&["audit"]));
    assert!(audit.contains("denied"), "{audit}");

    if !browser {
        return;
    }
    // The approver signs in through the form in a browser and approves.
    let driver = WebDriver::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = browser_session(driver.port).await;
        client.goto(&format!("{}/ui/sign-in", c.url)).await.unwrap();
        let field = client.find(fantoccini::Locator::Id("token")).await.unwrap();
        field.send_keys(&approver).await.unwrap();
        client
            .find(fantoccini::Locator::Css("form button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        // The sign-in answers with the matrix once the form was posted (a click does not
        // wait for the page it leads to).
        let button = client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(fantoccini::Locator::XPath(&format!(
                "//button[text()='Approve #{id}']"
            )))
            .await
            .expect("the approver sees the button");
        screenshot(&client, "dashboard-held").await;
        button.click().await.unwrap();
        let mut deployed = false;
        for _ in 0..600 {
            let cell = cell_text(&client, "cell-web@production").await;
            if cell.contains("v1") && cell.contains("1/1 healthy") && !cell.contains("awaits") {
                deployed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        screenshot(&client, "dashboard-approved").await;
        assert!(
            deployed,
            "{}",
            cell_text(&client, "cell-web@production").await
        );
        client.close().await.unwrap();
    });
    assert_eq!(p.instances("web", "production").len(), 1);
}

const ONE_HOST: &str = r#"
services:
  svc:
    build: ./svc
    run: ["python3", "app.py"]
    port: http
    health: { http: /health, timeout: 5s }
environments:
  fleet:
    nodes:
      - name: web
        count: 1
        services: [svc]
"#;

#[test]
fn the_hosts_page_lists_a_joined_host_and_drains_it_with_the_form_token_only() {
    let mut p = Project::new(ONE_HOST, &["svc"]);
    let token = crate::fleet::token(&mut p, "1");
    let _agent = crate::fleet::start_agent(&p, "web-1", Some(&token));
    let joined = wait_until(Duration::from_secs(15), || {
        crate::fleet::hosts(&mut p)
            .iter()
            .any(|h| h["name"] == "web-1" && h["state"] == "ready")
    });
    assert!(joined, "{:?}", crate::fleet::hosts(&mut p));
    let base = p.controller_url();
    let http = plain();
    let address = sign_in_address(&mut p);
    let signed = http.get(&address).send().unwrap();
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_owned();
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = |http: &reqwest::blocking::Client| {
        http.get(format!("{base}/ui/hosts"))
            .header("cookie", &session)
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    let html = page(&http);
    assert!(
        html.contains(">web-1</th>") && html.contains("zone=test"),
        "{html}"
    );
    assert!(
        html.contains(r#"action="/ui/hosts/fleet/web-1/drain""#),
        "{html}"
    );

    let forged = http
        .post(format!("{base}/ui/hosts/fleet/web-1/drain"))
        .header("cookie", &session)
        .form(&[("csrf", "forged")])
        .send()
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(
        crate::fleet::hosts(&mut p)[0]["state"],
        "ready",
        "nothing changed"
    );

    let drained = http
        .post(format!("{base}/ui/hosts/fleet/web-1/drain"))
        .header("cookie", &session)
        .form(&[("csrf", csrf_of(&html).as_str())])
        .send()
        .unwrap();
    assert_eq!(drained.status(), 303);
    assert_eq!(crate::fleet::hosts(&mut p)[0]["state"], "draining");
    let html = page(&http);
    assert!(
        html.contains(r#"action="/ui/hosts/fleet/web-1/undrain""#),
        "{html}"
    );
    // A revoked host stays revoked: no button, and an undrain is refused.
    p.ok(&["host", "revoke", "web-1"]);
    let html = page(&http);
    assert!(!html.contains("/ui/hosts/fleet/web-1/"), "{html}");
    let undrain = http
        .post(format!("{base}/ui/hosts/fleet/web-1/undrain"))
        .header("cookie", &session)
        .form(&[("csrf", csrf_of(&html).as_str())])
        .send()
        .unwrap();
    assert_eq!(undrain.status(), 409);
    assert_eq!(crate::fleet::hosts(&mut p)[0]["state"], "revoked");
}
