//! A service's page on the dashboard: its buttons do what the API lets the signed-in
//! token do and nothing more, each revision says what it changed, and its logs grow
//! live in a real browser.

use std::time::{Duration, Instant};

use crate::dashboard::*;
use crate::harness::*;

/// The service page as `cookie`'s session sees it.
fn service_page(http: &reqwest::blocking::Client, url: &str, cookie: &str) -> String {
    let page = http
        .get(format!("{url}/ui/services/web"))
        .header("cookie", cookie)
        .send()
        .unwrap();
    assert_eq!(page.status(), 200);
    page.text().unwrap()
}

fn versions(p: &mut Project, env: &str) -> Vec<String> {
    p.instances("web", env)
        .iter()
        .map(|i| i["version"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_reader_sees_no_button_and_its_forged_deploy_and_a_post_without_the_form_token_change_nothing()
{
    let mut p = Project::new(SHOP, &["web"]);
    let c = crate::governance::AuthController::start(&p);
    let issue = |p: &mut Project, name: &str, scope: &str| {
        c.as_admin(p, &["token", "issue", name, "--scope", scope])
    };
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v2"]);
    let reader = issue(&mut p, "reader", "ci:read");
    let deployer = issue(&mut p, "deployer", "ci:deploy");
    let http = plain();

    let reading = session_of(&http, &c.url, &reader);
    let page = service_page(&http, &c.url, &reading);
    assert!(page.contains("<h1>web</h1>"), "{page}");
    for hidden in ["/ci/deploy", "/ci/rollback", "Deploy to ci", "Roll back"] {
        assert!(!page.contains(hidden), "a reader sees {hidden}: {page}");
    }
    let forged = http
        .post(format!("{}/ui/services/web/ci/rollback", c.url))
        .header("cookie", &reading)
        .form(&[("csrf", csrf_of(&page).as_str())])
        .send()
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(forged.text().unwrap().contains("may not deploy"));

    let deploying = session_of(&http, &c.url, &deployer);
    let page = service_page(&http, &c.url, &deploying);
    for shown in [
        r#"action="/ui/services/web/ci/deploy""#,
        r#"<option value="v1">v1</option>"#,
        r#"action="/ui/services/web/ci/rollback""#,
    ] {
        assert!(page.contains(shown), "the deployer misses {shown}: {page}");
    }
    let bare = http
        .post(format!("{}/ui/services/web/ci/deploy", c.url))
        .header("cookie", &deploying)
        .form(&[("version", "v1")])
        .send()
        .unwrap();
    assert_eq!(bare.status(), 403, "no form token");
    let elsewhere = http
        .post(format!("{}/ui/services/web/ci/deploy", c.url))
        .header("cookie", &deploying)
        .header("origin", "http://evil.example")
        .form(&[("csrf", csrf_of(&page).as_str()), ("version", "v1")])
        .send()
        .unwrap();
    assert_eq!(elsewhere.status(), 403, "posted from another site");
    assert_eq!(versions(&mut p, "ci"), ["v2"], "nothing changed");
    let audit = stdout(&p.ok(&["audit"]));
    assert!(
        audit.contains("reader") && audit.contains("denied"),
        "{audit}"
    );

    // The deployer's rollback goes through, as `wharf rollback` would.
    let rolled = http
        .post(format!("{}/ui/services/web/ci/rollback", c.url))
        .header("cookie", &deploying)
        .form(&[("csrf", csrf_of(&page).as_str())])
        .send()
        .unwrap();
    assert_eq!(
        rolled.status(),
        303,
        "{}",
        rolled.text().unwrap_or_default()
    );
    assert!(
        wait_until(Duration::from_secs(30), || versions(&mut p, "ci") == ["v1"]),
        "never rolled back: {:?}",
        versions(&mut p, "ci")
    );
    let history = p.json(&["history", "web", "--env", "ci"]);
    assert_eq!(history[0]["kind"], "rollback", "{history}");
    assert_eq!(history[0]["user"], "deployer", "{history}");
}

#[test]
fn each_configuration_revision_shows_what_it_changed() {
    let mut p = Project::new(SHOP, &["web"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    p.ok(&[
        "config",
        "set",
        "web",
        "--env",
        "ci",
        "LEVEL=info",
        "MESSAGE=hi",
    ]);
    p.ok(&["config", "set", "web", "--env", "ci", "LEVEL=debug"]);
    p.ok(&["config", "unset", "web", "--env", "ci", "MESSAGE"]);
    let address = sign_in_address(&mut p);
    let http = plain();
    let signed = http.get(&address).send().unwrap();
    assert_eq!(signed.status(), 303);
    let cookie = signed.headers()["set-cookie"].to_str().unwrap();
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = service_page(&http, &p.controller_url(), &session);
    for change in [
        "+ <code>LEVEL=info</code>",
        "+ <code>MESSAGE=hi</code>",
        "~ <code>LEVEL</code>: <code>info</code> → <code>debug</code>",
        "− <code>MESSAGE=hi</code>",
    ] {
        assert!(page.contains(change), "{change}: {page}");
    }
    assert!(page.contains(r#"id="config-ci-3""#), "{page}");
}

#[test]
fn a_version_is_deployed_from_the_page_and_its_logs_grow_live_in_a_real_browser() {
    if !browser_ready() {
        return;
    }
    let mut p = Project::new(SHOP, &["web"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v2"]);
    let address = sign_in_address(&mut p);
    let base = p.controller_url();
    let driver = WebDriver::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // One browser session throughout: the sign-in address works once.
    let client = runtime.block_on(browser_session(driver.port));
    runtime.block_on(async {
        client.goto(&address).await.unwrap();
        client
            .goto(&format!("{base}/ui/services/web"))
            .await
            .unwrap();
        let select = client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(fantoccini::Locator::Id("version-ci"))
            .await
            .expect("a deployer sees the versions");
        select.select_by_value("v1").await.unwrap();
        client
            .find(fantoccini::Locator::XPath(
                "//button[text()='Deploy to ci']",
            ))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        // The page answers once the deploy is under way (or refused).
        let clicked = Instant::now();
        let mut source = String::new();
        while clicked.elapsed() < Duration::from_secs(15) {
            source = client.source().await.unwrap_or_default();
            if source.contains("deploying to ci") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(source.contains("deploying to ci"), "{source}");
        screenshot(&client, "dashboard-service-deploy").await;
    });
    assert!(
        wait_until(Duration::from_secs(30), || versions(&mut p, "ci") == ["v1"]),
        "the page's deploy never ran: {:?}",
        versions(&mut p, "ci")
    );
    let history = p.json(&["history", "web", "--env", "ci"]);
    assert_eq!(history[0]["version"], "v1", "{history}");
    assert_eq!(history[0]["state"], "succeeded", "{history}");

    // The page, loaded once, shows a request's log line as the instance writes it.
    let port = p.address_port("web", "ci");
    runtime.block_on(async {
        client
            .goto(&format!("{base}/ui/services/web"))
            .await
            .unwrap();
        client
            .execute("window.wharfMark = 'this load'; return 1;", vec![])
            .await
            .unwrap();
        let marker = format!("/marker-{}", std::process::id());
        let log_text = || async {
            match client.find(fantoccini::Locator::Id("logs-ci")).await {
                Ok(log) => log.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            }
        };
        let asked = Instant::now();
        let mut seen = false;
        while asked.elapsed() < Duration::from_secs(10) {
            // Asked again until the stream is open and the line arrives.
            let asking = marker.clone();
            let _ = tokio::task::spawn_blocking(move || get(port, &asking)).await;
            if log_text().await.contains(&marker) {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(seen, "the log never showed {marker}: {}", log_text().await);
        let mark = client
            .execute("return window.wharfMark || null;", vec![])
            .await
            .unwrap();
        assert_eq!(mark, serde_json::json!("this load"), "without a reload");
        screenshot(&client, "dashboard-service-logs").await;
    });
    runtime.block_on(client.close()).unwrap();
}
