//! Loading definitions: the accepted format and every kind of error, with locations.

use wharf_core::model::{PortSpec, Probe};
use wharf_core::{FolderCheck, load};

struct Folders(&'static [&'static str]);

impl FolderCheck for Folders {
    fn is_folder(&self, relative: &str) -> bool {
        self.0.contains(&relative.trim_start_matches("./"))
    }
}

const FOLDERS: Folders = Folders(&["catalog", "orders", "web"]);

const GOOD: &str = r#"
services:
  catalog:
    build: ./catalog
    run: ["python3", "app.py"]
    port: http
    health: { http: /health, timeout: 5s }
    config: { LOG_LEVEL: info, GREETING: hello, RETRIES: 3 }
  orders:
    build: { context: ./orders, command: ["make"], output: dist }
    run: ["./orders"]
    port: 9000
    config:
      CATALOG_URL: "{{ services.catalog.url }}"
environments:
  local:
    nodes:
      - name: laptop
        services: [catalog, { name: orders, instances: 2 }]
  ci:
    after: local
  uat:
    after: ci
    config:
      catalog: { LOG_LEVEL: debug }
  production:
    after: uat
    nodes:
      - name: web
        services: [catalog]
        count: 5
"#;

#[test]
fn a_good_definition_resolves() {
    let def = load(GOOD, "wharf.yaml", &FOLDERS).unwrap();
    assert_eq!(def.pipeline, ["local", "ci", "uat", "production"]);
    let catalog = &def.services["catalog"];
    assert_eq!(catalog.port, Some(PortSpec::Named("http".into())));
    assert_eq!(catalog.config["RETRIES"], "3");
    assert!(
        matches!(&catalog.health.as_ref().unwrap().probe, Probe::Http { path } if path == "/health")
    );
    assert_eq!(
        def.services["orders"].build.as_ref().unwrap().output,
        "./orders/dist"
    );
    let prod = &def.environments["production"];
    let names: Vec<&str> = prod.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["web-1", "web-2", "web-3", "web-4", "web-5"]);
    // An environment without nodes runs every service once on one node.
    assert_eq!(def.environments["ci"].nodes[0].services.len(), 2);
}

#[test]
fn deploy_spec_layers_service_environment_and_node_config() {
    let def = load(GOOD, "wharf.yaml", &FOLDERS).unwrap();
    let uat = def.deploy_spec("catalog", "uat").unwrap();
    assert_eq!(uat.slots[0].config["LOG_LEVEL"], "debug");
    assert_eq!(uat.slots[0].config["GREETING"], "hello");
    let local = def.deploy_spec("orders", "local").unwrap();
    assert_eq!(local.slots.len(), 2);
    assert_eq!(local.slots[1].instance, 1);
    let prod = def.deploy_spec("catalog", "production").unwrap();
    assert_eq!(prod.slots.len(), 5);
    let err = def.deploy_spec("orders", "production").unwrap_err();
    assert!(
        err.to_string()
            .contains("does not run in environment `production`")
    );
    let err = def.deploy_spec("oders", "local").unwrap_err();
    assert_eq!(err.hint(), "did you mean `orders`?");
}

fn errors(text: &str) -> String {
    load(text, "wharf.yaml", &FOLDERS).unwrap_err().to_string()
}

#[test]
fn all_errors_are_reported_at_once_with_locations() {
    let text = "services:\n  catalog:\n    build: ./catalog\n    run: [python3]\n    helth: {}\n    port: \"x\"\n  orders:\n    build: ./orders\n    run: python3\n";
    let out = errors(text);
    assert!(
        out.contains("unknown key `helth` in `services.catalog`"),
        "{out}"
    );
    assert!(out.contains("--> wharf.yaml:5:5"), "{out}");
    assert!(out.contains("hint: did you mean `health`?"), "{out}");
    assert!(
        out.contains("`services.orders.run` expects a list, found `python3`"),
        "{out}"
    );
    assert!(out.contains("--> wharf.yaml:9:10"), "{out}");
    assert!(out.contains("has 2 errors"), "{out}");
}

#[test]
fn unknown_service_on_a_node_suggests_the_closest_name() {
    let text = GOOD.replace(
        "services: [catalog, { name: orders",
        "services: [catalog, { name: oders",
    );
    let out = errors(&text);
    assert!(out.contains("runs unknown service `oders`"), "{out}");
    assert!(out.contains("did you mean `orders`?"), "{out}");
    assert!(out.contains("wharf.yaml:19:"), "{out}");
}

#[test]
fn wrong_types_and_missing_fields() {
    let out = errors("services:\n  catalog:\n    build: ./catalog\n    port: 70000\n");
    assert!(
        out.contains("service `catalog` has an empty `run` command"),
        "{out}"
    );
    assert!(out.contains("`services.catalog.port`"), "{out}");
}

#[test]
fn pipeline_cycles_and_unknown_after_are_errors() {
    let out = errors("environments:\n  a: { after: b }\n  b: { after: a }\n  c: { after: prod }\n");
    assert!(out.contains("cycle"), "{out}");
    assert!(out.contains("unknown environment `prod`"), "{out}");
}

#[test]
fn duplicate_names_are_errors() {
    let out = errors(
        "services:\n  catalog: { build: ./catalog, run: [x] }\n  catalog: { build: ./catalog, run: [y] }\n",
    );
    assert!(
        out.contains("duplicate key `catalog`") && out.contains("wharf.yaml:3:3"),
        "{out}"
    );
    let text = "services:\n  catalog: { build: ./catalog, run: [x] }\nenvironments:\n  local:\n    nodes:\n      - { name: a, services: [catalog] }\n      - { name: a, services: [catalog] }\n";
    let out = errors(text);
    assert!(out.contains("node `a` is defined twice"), "{out}");
}

#[test]
fn a_missing_build_folder_is_an_error() {
    let out = errors("services:\n  api: { build: ./nowhere, run: [x] }\n");
    assert!(
        out.contains("build folder `./nowhere` of service `api` does not exist"),
        "{out}"
    );
    assert!(out.contains("wharf.yaml:2:17"), "{out}");
}

#[test]
fn bad_templates_and_durations_are_errors() {
    let text = "services:\n  catalog:\n    build: ./catalog\n    run: [x]\n    port: http\n    health: { tcp: true, timeout: soon }\n    config: { A: \"{{ prot }}\" }\n";
    let out = errors(text);
    assert!(out.contains("template uses undefined name `prot`"), "{out}");
    assert!(out.contains("did you mean `port`?"), "{out}");
    assert!(out.contains("`soon` is not a duration"), "{out}");
}

#[test]
fn a_yaml_syntax_error_has_a_location() {
    let out = errors("services:\n  catalog: [unclosed\n");
    assert!(out.contains("invalid YAML"), "{out}");
    assert!(out.contains("--> wharf.yaml:"), "{out}");
}

#[test]
fn the_schema_is_generated_from_the_parsing_types() {
    let schema = wharf_core::raw::json_schema();
    let service = &schema["$defs"]["RawService"];
    assert_eq!(service["additionalProperties"], false);
    assert!(service["properties"].get("health").is_some());
}

#[test]
fn image_services_run_with_the_docker_driver_and_folders_with_processes() {
    let ok = "services:\n  api: { image: 'shop/api:1', port: http }\n";
    let def = load(ok, "wharf.yaml", &FOLDERS).unwrap();
    assert_eq!(
        def.services["api"].driver,
        wharf_core::model::DriverKind::Docker
    );
    assert!(def.services["api"].build.is_none());
    let both = errors("services:\n  catalog: { image: 'x:1', build: ./catalog, run: [a] }\n");
    assert!(both.contains("has both `build` and `image`"), "{both}");
    let neither = errors("services:\n  catalog: { run: [a] }\n");
    assert!(
        neither.contains("has neither `build` nor `image`"),
        "{neither}"
    );
    let folder_image = load(
        "services:\n  catalog: { build: ./catalog, run: [./a], driver: docker }\n",
        "wharf.yaml",
        &FOLDERS,
    )
    .unwrap();
    assert_eq!(
        folder_image.services["catalog"].driver,
        wharf_core::model::DriverKind::Docker,
        "a folder becomes an image"
    );
}

#[test]
fn a_node_can_choose_the_driver_of_what_it_runs() {
    let text = "services:\n  catalog: { build: ./catalog, run: [./app] }\nenvironments:\n  ci:\n    nodes:\n      - { name: a, services: [catalog] }\n      - { name: b, services: [catalog], driver: docker }\n";
    let def = load(text, "wharf.yaml", &FOLDERS).unwrap();
    let spec = def.deploy_spec("catalog", "ci").unwrap();
    assert_eq!(spec.slots[0].driver, None);
    assert_eq!(
        spec.slots[1].driver,
        Some(wharf_core::model::DriverKind::Docker)
    );
}

#[test]
fn an_image_cannot_run_with_the_process_driver_of_its_node() {
    let text = r#"
services:
  cache: { image: "redis:7", run: [] }
environments:
  local:
    nodes:
      - { name: box, driver: process, services: [cache] }
"#;
    let err = load(text, "wharf.yaml", &FOLDERS).unwrap_err().to_string();
    assert!(
        err.contains("has `driver: process`, but service `cache` runs an image"),
        "{err}"
    );
}

#[test]
fn rollout_limits_and_timeouts_are_read_and_checked() {
    let text = GOOD.replace(
        "    health: { http: /health, timeout: 5s }\n",
        "    health: { http: /health, timeout: 5s }\n    rollout: { max_surge: 2, max_unavailable: 1, drain_timeout: 5s, pause_timeout: 2s }\n    response_timeout: 3s\n",
    );
    let def = load(&text, "wharf.yaml", &FOLDERS).unwrap();
    let rollout = def.services["catalog"].rollout.clone();
    assert_eq!(
        def.services["catalog"].response_timeout,
        std::time::Duration::from_secs(3)
    );
    assert_eq!(
        def.services["orders"].response_timeout,
        std::time::Duration::from_secs(60),
        "a minute by default"
    );
    assert_eq!(
        (rollout.limits.max_surge, rollout.limits.max_unavailable),
        (2, 1)
    );
    assert_eq!(rollout.drain_timeout, std::time::Duration::from_secs(5));
    assert_eq!(rollout.pause_timeout, std::time::Duration::from_secs(2));
    assert_eq!(
        def.services["orders"].rollout,
        wharf_core::rollout::Rollout::default(),
        "one new instance at a time beside the old, 30 s to drain, 10 s to pause"
    );

    let table = [
        (
            "rollout: { max_surge: 0, max_unavailable: 0 }",
            "cannot both be 0",
        ),
        ("rollout: { strategy: canary }", "canary"),
        ("rollout: { drain_timeout: soon }", "wharf.yaml:8:31"),
        ("rollout: { max_sruge: 1 }", "did you mean `max_surge`?"),
    ];
    for (yaml, expected) in table {
        let out = errors(&GOOD.replace(
            "    health: { http: /health, timeout: 5s }\n",
            &format!("    health: {{ http: /health, timeout: 5s }}\n    {yaml}\n"),
        ));
        assert!(out.contains(expected), "{yaml}: {out}");
    }
}

#[test]
fn blue_green_and_canary_rollouts_are_read() {
    use wharf_core::strategy::{Analysis, CanaryStep, Pin, Strategy};
    let with = |yaml: &str| {
        GOOD.replace(
            "    health: { http: /health, timeout: 5s }\n",
            &format!("    health: {{ http: /health, timeout: 5s }}\n    {yaml}\n"),
        )
    };
    let def = load(
        &with("rollout: { strategy: blue-green, scale_down_delay: 2m, preview_port: 8100 }"),
        "wharf.yaml",
        &FOLDERS,
    )
    .unwrap();
    let rollout = &def.services["catalog"].rollout;
    assert_eq!(
        rollout.strategy,
        Strategy::BlueGreen {
            scale_down_delay: std::time::Duration::from_secs(120)
        }
    );
    assert_eq!(rollout.preview_port, Some(8100));
    let def = load(
        &with("rollout: { strategy: canary, steps: [{ weight: 10, pause: 5m }, { weight: 50 }], pin: { header: X-Canary }, analysis: { max_error_increase: 1.5%, max_p99_increase: 200ms } }"),
        "wharf.yaml",
        &FOLDERS,
    )
    .unwrap();
    assert_eq!(
        def.services["catalog"].rollout.strategy,
        Strategy::Canary {
            steps: vec![
                CanaryStep {
                    weight: 10,
                    pause_ms: Some(300_000)
                },
                CanaryStep {
                    weight: 50,
                    pause_ms: None
                },
            ],
            pin: Pin {
                header: "x-canary".into(),
                ..Pin::default()
            },
            analysis: Analysis {
                max_error_increase_bp: 150,
                max_p99_increase_ms: 200,
                ..Analysis::default()
            },
        }
    );
}

#[test]
fn blue_green_and_canary_rollouts_are_checked() {
    let table = [
        (
            "catalog",
            "rollout: { strategy: canary, steps: [{ weight: 0 }] }",
            "1 to 100, not 0",
        ),
        (
            "catalog",
            "rollout: { strategy: canary, steps: [{ weight: 5, pause: later }] }",
            "wharf.yaml:8:",
        ),
        (
            "catalog",
            "rollout: { strategy: canary, steps: [{ weight: 5 }], pin: { header: \"a b\" } }",
            "not a header name",
        ),
        (
            "catalog",
            "rollout: { strategy: canary, steps: [{ weight: 5 }], analysis: { max_error_increase: lots } }",
            "not a percentage",
        ),
        (
            "catalog",
            "rollout: { strategy: blue-green, steps: [{ weight: 5 }] }",
            "`steps` does not apply to a blue-green rollout",
        ),
        (
            "catalog",
            "rollout: { scale_down_delay: 1m }",
            "does not apply to a rolling rollout",
        ),
        (
            "orders",
            "rollout: { strategy: blue-green }",
            "cannot both listen on the fixed port 9000",
        ),
    ];
    for (service, yaml, expected) in table {
        let text = match service {
            "catalog" => GOOD.replace(
                "    health: { http: /health, timeout: 5s }\n",
                &format!("    health: {{ http: /health, timeout: 5s }}\n    {yaml}\n"),
            ),
            _ => GOOD.replace("    port: 9000\n", &format!("    port: 9000\n    {yaml}\n")),
        };
        let out = errors(&text);
        assert!(out.contains(expected), "{yaml}: {out}");
    }
}

#[test]
fn templates_in_run_and_health_commands_are_checked() {
    let out = errors(&GOOD.replace(
        "    run: [\"python3\", \"app.py\"]\n    port: http\n",
        "    run: [\"python3\", \"app.py\", \"--port\", \"{{ prot }}\"]\n    port: http\n",
    ));
    assert!(
        out.contains("`run` argument 4 of service `catalog`"),
        "{out}"
    );
    assert!(out.contains("did you mean `port`?"), "{out}");
    assert!(out.contains("wharf.yaml:5:42"), "at the argument: {out}");
    let good = GOOD.replace(
        "    run: [\"python3\", \"app.py\"]\n    port: http\n",
        "    run: [\"python3\", \"app.py\", \"--port\", \"{{ port }}\"]\n    port: http\n",
    );
    assert!(load(&good, "wharf.yaml", &FOLDERS).is_ok());
}

#[test]
fn anchors_aliases_merge_keys_and_extension_keys_shape_a_definition() {
    let text = r#"
x-python: &python
  run: ["python3", "app.py"]
  port: http
  health: { http: /health }
services:
  catalog:
    <<: *python
    build: ./catalog
  orders:
    <<: *python
    build: ./orders
    port: 9000
environments:
  local:
    nodes:
      - { name: laptop, services: [catalog, orders] }
"#;
    let def = load(text, "wharf.yaml", &FOLDERS).unwrap();
    assert_eq!(def.services["catalog"].run, ["python3", "app.py"]);
    assert_eq!(
        def.services["catalog"].port,
        Some(PortSpec::Named("http".into()))
    );
    assert_eq!(
        def.services["orders"].port,
        Some(PortSpec::Fixed(9000)),
        "its own key wins"
    );
    let out = errors(&text.replace("x-python", "python"));
    assert!(
        out.contains("unknown key `python`"),
        "only `x-` keys are extensions: {out}"
    );
}

#[test]
fn a_stop_signal_is_read_and_checked() {
    let with = |value: &str| {
        GOOD.replace(
            "    port: http\n    health:",
            &format!("    port: http\n    stop_signal: {value}\n    health:"),
        )
    };
    let def = load(&with("SIGQUIT"), "wharf.yaml", &FOLDERS).unwrap();
    assert_eq!(def.services["catalog"].stop_signal.as_deref(), Some("QUIT"));
    let out = errors(&with("KILL"));
    assert!(
        out.contains("`KILL` is not a signal a stop can start with"),
        "{out}"
    );
}

const WITH_INGRESS: &str = r#"
services:
  web:
    build: ./web
    run: ["python3", "app.py"]
    port: http
  orders:
    build: ./orders
    run: ["./orders"]
    port: 9000
environments:
  local:
    ingress:
      listen: 127.0.0.1:8080
      routes:
        - { host: Shop.Local, service: web }
        - { path: /api/, service: orders, strip_prefix: true }
"#;

#[test]
fn an_ingress_resolves_with_hosts_lowercased_and_paths_trimmed() {
    let def = load(WITH_INGRESS, "wharf.yaml", &FOLDERS).unwrap();
    let ingress = def.environments["local"].ingress.clone().unwrap();
    assert_eq!(ingress.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(ingress.routes[0].host.as_deref(), Some("shop.local"));
    assert_eq!(ingress.routes[0].path, "/");
    assert_eq!(ingress.routes[1].path, "/api");
    assert!(ingress.routes[1].strip_prefix);
}

#[test]
fn ingress_routes_to_unknown_services_overlapping_or_on_a_taken_port_are_errors() {
    let text = WITH_INGRESS
        .replace("127.0.0.1:8080", "127.0.0.1:9000")
        .replace("service: web }", "service: wbe }")
        .replace(
            "strip_prefix: true }",
            "strip_prefix: true }\n        - { path: /api, service: web }",
        );
    let out = errors(&text);
    assert!(
        out.contains("routes to unknown service `wbe`")
            && out.contains("valid services: `orders`, `web`"),
        "{out}"
    );
    assert!(out.contains("wharf.yaml:16:"), "the route's line: {out}");
    assert!(
        out.contains(
            "routes 1 and 2 of the ingress of `local` both take any host with paths under `/api`"
        ),
        "{out}"
    );
    assert!(
        out.contains("listens on port 9000, the `port` of service `orders`"),
        "{out}"
    );
    let bad = errors(&WITH_INGRESS.replace("127.0.0.1:8080", "8080"));
    assert!(bad.contains("cannot listen on `8080`"), "{bad}");
    let two = errors(&WITH_INGRESS.replace(
        "environments:\n",
        "environments:\n  ci:\n    ingress: { listen: \"127.0.0.1:8080\", routes: [{ service: web }] }\n",
    ));
    assert!(
        two.contains("the ingresses of `ci` and `local` both listen on port 8080"),
        "{two}"
    );
}

#[test]
fn an_https_route_names_its_host_and_the_ingress_a_tls_listen() {
    let text = WITH_INGRESS.replace(
        "{ path: /api/, service: orders, strip_prefix: true }",
        "{ path: /api/, service: orders, tls: { cert: C, key: K } }",
    );
    let out = errors(&text);
    assert!(
        out.contains("a route with `tls` names the `host` its certificate is for"),
        "{out}"
    );
    assert!(
        out.contains("has a route with `tls` but no `tls_listen`"),
        "{out}"
    );
    let idle = errors(&WITH_INGRESS.replace(
        "listen: 127.0.0.1:8080\n",
        "listen: 127.0.0.1:8080\n      tls_listen: 127.0.0.1:8443\n",
    ));
    assert!(
        idle.contains("listens for HTTPS, but no route has `tls`"),
        "{idle}"
    );
    let clash = errors(
        &WITH_INGRESS
            .replace("listen: 127.0.0.1:8080\n", "listen: 127.0.0.1:8080\n      tls_listen: 127.0.0.1:9000\n")
            .replace(
                "{ host: Shop.Local, service: web }",
                "{ host: shop.local, service: web, tls: { cert: A, key: B } }\n        - { host: shop.local, path: /x, service: web, tls: { cert: C, key: B } }\n        - { host: 10.0.0.1, service: web, tls: { cert: A, key: B } }",
            ),
    );
    assert!(
        clash.contains("give host `shop.local` different certificates"),
        "{clash}"
    );
    assert!(clash.contains("`10.0.0.1` is an address"), "{clash}");
    assert!(
        clash.contains("listens on port 9000, the `port` of service `orders`"),
        "tls_listen is checked too: {clash}"
    );
}

#[test]
fn volumes_are_paths_inside_a_container_with_host_folders_per_environment() {
    let text = r#"
services:
  db:
    image: postgres:16
    run: ["postgres"]
    volumes: [/var/lib/postgresql/data]
environments:
  local: {}
  prod:
    volumes: { db: { /var/lib/postgresql/data: /srv/pg } }
"#;
    let def = load(text, "wharf.yaml", &FOLDERS).unwrap();
    let local = def.deploy_spec("db", "local").unwrap();
    assert_eq!(local.volumes[0].path, "/var/lib/postgresql/data");
    assert_eq!(local.volumes[0].host, None, "a named volume");
    let prod = def.deploy_spec("db", "prod").unwrap();
    assert_eq!(prod.volumes[0].host.as_deref(), Some("/srv/pg"));

    let typo = text.replace("/srv/pg } }", "/srv/pg, /var/lib/pg: /x } }");
    let err = errors(&typo);
    assert!(
        err.contains("service `db` has no volume `/var/lib/pg`"),
        "{err}"
    );
    let relative = text.replace("volumes: [/var/lib/postgresql/data]", "volumes: [data]");
    assert!(errors(&relative).contains("`data` is not a path inside the container"));
}

const SSH_HOSTS: &str = r#"
services:
  web: { build: ./catalog, run: [x], port: http }
environments:
  production:
    hosts:
      provider: ssh
      user: deploy
      hosts:
        - { name: web-1, address: 10.0.0.5, host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBase64KeyBody" }
        - { name: web-2, address: 10.0.0.6, port: 2222, user: ops }
    pools:
      web: { count: 2 }
"#;

#[test]
fn a_machine_added_by_command_joins_the_listed_ones_unless_it_clashes() {
    use wharf_core::model::{SshEndpoint, SshMachine};
    use wharf_core::ssh_hosts::{AddHostError, add_machine, remove_machine};
    let machine = |name: &str, address: &str, port: u16| SshMachine {
        name: name.into(),
        endpoint: SshEndpoint {
            address: address.into(),
            port,
            user: "deploy".into(),
            host_key: None,
        },
    };
    let mut def = load(SSH_HOSTS, "wharf.yaml", &FOLDERS).unwrap();
    add_machine(&mut def, "production", machine("web-3", "10.0.0.7", 22)).unwrap();
    let hosts = def.environments["production"].hosts.as_ref().unwrap();
    assert_eq!(hosts.names, ["web-1", "web-2", "web-3"]);
    assert_eq!(hosts.ssh.as_ref().unwrap().machines.len(), 3);
    let refused = |def: &mut wharf_core::Definition, env: &str, m: SshMachine| {
        add_machine(def, env, m).unwrap_err()
    };
    assert!(matches!(
        refused(&mut def, "production", machine("web-1", "10.0.0.9", 22)),
        AddHostError::NameTaken { .. }
    ));
    assert!(matches!(
        refused(&mut def, "production", machine("web-9", "10.0.0.6", 2222)),
        AddHostError::AddressTaken { name, .. } if name == "web-2"
    ));
    assert!(matches!(
        refused(&mut def, "production", machine("Web_9", "10.0.0.9", 22)),
        AddHostError::BadName(_)
    ));
    assert!(matches!(
        refused(&mut def, "staging", machine("web-9", "10.0.0.9", 22)),
        AddHostError::NoEnvironment(_)
    ));
    let mut bad_key = machine("web-9", "10.0.0.9", 22);
    bad_key.endpoint.host_key = Some("not a key".into());
    assert!(matches!(
        refused(&mut def, "production", bad_key),
        AddHostError::BadHostKey(_)
    ));
    assert!(remove_machine(&mut def, "production", "web-3"));
    assert!(!remove_machine(&mut def, "production", "web-3"));
    let hosts = def.environments["production"].hosts.as_ref().unwrap();
    assert_eq!(hosts.names, ["web-1", "web-2"]);
}

#[test]
fn ssh_machines_resolve_with_their_logins() {
    let def = load(SSH_HOSTS, "wharf.yaml", &FOLDERS).unwrap();
    let hosts = def.environments["production"].hosts.as_ref().unwrap();
    assert_eq!(hosts.names, ["web-1", "web-2"]);
    let ssh = hosts.ssh.as_ref().unwrap();
    assert_eq!(ssh.identity_file, "~/.ssh/id_ed25519");
    let second = &ssh.machines[1].endpoint;
    assert_eq!((second.port, second.user.as_str()), (2222, "ops"));
    assert_eq!(ssh.machines[0].endpoint.user, "deploy");
}

#[test]
fn ssh_hosts_that_cannot_be_reached_safely_are_errors() {
    let bad_key = errors(&SSH_HOSTS.replace("ssh-ed25519 AAAA", "AAAA"));
    assert!(
        bad_key.contains("is not a host key: it needs its type"),
        "{bad_key}"
    );
    let bad_type = errors(&SSH_HOSTS.replace("ssh-ed25519 AAAA", "rsa AAAA"));
    assert!(
        bad_type.contains("`rsa` is not an SSH key type"),
        "{bad_type}"
    );
    assert!(
        bad_key.contains("wharf.yaml:10:"),
        "the host's line: {bad_key}"
    );
    let twice = errors(&SSH_HOSTS.replace("name: web-2", "name: web-1"));
    assert!(twice.contains("host `web-1` is listed twice"), "{twice}");
    let jump = errors(&SSH_HOSTS.replace(
        "      user: deploy\n",
        "      user: deploy\n      jump: { address: bastion }\n",
    ));
    assert!(jump.contains("add `controller: https://"), "{jump}");
    let counted = errors(&SSH_HOSTS.replace("      user: deploy\n", "      count: 3\n"));
    assert!(
        counted.contains("`count` does not apply to `provider: ssh`"),
        "{counted}"
    );
    let elsewhere = errors(&SSH_HOSTS.replace("provider: ssh", "provider: netns"));
    assert!(
        elsewhere.contains("`user` applies only to `provider: ssh`"),
        "{elsewhere}"
    );
}

const DEV: &str = r#"
services:
  catalog:
    build: ./catalog
    run: ["python3", "app.py"]
    port: http
    dev: { on_change: { signal: HUP }, rebuild: ["src/**"] }
  orders:
    build: ./orders
    run: ["./orders"]
environments:
  local: {}
  ci: { after: local }
  preview: { after: ci, dev: true }
  uat: { after: ci, dev: false }
  production: { after: uat, approval: required }
"#;

#[test]
fn dev_runs_in_the_first_environment_or_one_marked_for_it() {
    use wharf_core::dev::{DevChange, DevRefusal, default_dev_environment, dev_allowed};
    let def = load(DEV, "wharf.yaml", &FOLDERS).unwrap();
    for (env, allowed) in [
        ("local", true),
        ("preview", true),
        ("ci", false),
        ("uat", false),
        ("production", false),
    ] {
        assert_eq!(dev_allowed(&def, env).is_ok(), allowed, "{env}");
    }
    assert!(matches!(
        dev_allowed(&def, "ci"),
        Err(DevRefusal::NotFirst { first, .. }) if first == "local"
    ));
    assert!(matches!(
        dev_allowed(&def, "uat"),
        Err(DevRefusal::MarkedOff { .. })
    ));
    assert!(matches!(
        dev_allowed(&def, "production"),
        Err(DevRefusal::Approval { .. })
    ));
    assert!(matches!(
        dev_allowed(&def, "nowhere"),
        Err(DevRefusal::NoEnvironment(_))
    ));
    assert_eq!(default_dev_environment(&def), Some("local"));
    let catalog = &def.services["catalog"].dev;
    assert_eq!(catalog.on_change, DevChange::Signal("HUP".into()));
    assert_eq!(catalog.rebuild, ["src/**"]);
    assert_eq!(def.services["orders"].dev.on_change, DevChange::Restart);
    let synced = load(
        &DEV.replace("{ signal: HUP }", "sync"),
        "wharf.yaml",
        &FOLDERS,
    )
    .unwrap();
    assert_eq!(synced.services["catalog"].dev.on_change, DevChange::Sync);
}

#[test]
fn bad_dev_settings_are_errors_at_their_place() {
    let text = DEV
        .replace("{ signal: HUP }", "{ signal: KILL }")
        .replace("\"src/**\"", "\"src/[\"")
        .replace("approval: required }", "approval: required, dev: true }");
    let err = errors(&text);
    assert!(
        err.contains("`KILL` is not a signal `wharf dev` sends"),
        "{err}"
    );
    assert!(err.contains("`src/[` is not a glob"), "{err}");
    assert!(err.contains("waits for approval of every deploy"), "{err}");
    assert!(err.contains("wharf.yaml:7:"), "located: {err}");
    let word = errors(&DEV.replace("{ signal: HUP }", "reload"));
    assert!(
        word.contains("`on_change: reload` is not something `wharf dev` does"),
        "{word}"
    );
}

const ENGINE: &str = r#"
services:
  catalog:
    build: ./catalog
    run: ["python3", "app.py"]
    port: http
environments:
  swarm:
    engine: { kind: swarm }
    pools:
      catalog: { count: 3 }
  k8s:
    after: swarm
    engine: { kind: kubernetes, context: kind-dev }
"#;

#[test]
fn an_engine_environment_hands_its_replicas_to_the_engine() {
    let def = load(ENGINE, "wharf.yaml", &FOLDERS).unwrap();
    let swarm = def.deploy_spec("catalog", "swarm").unwrap();
    assert_eq!(swarm.engine, Some(wharf_core::model::Engine::Swarm));
    assert_eq!(swarm.slots.len(), 3);
    let k8s = def.deploy_spec("catalog", "k8s").unwrap();
    assert_eq!(
        k8s.engine,
        Some(wharf_core::model::Engine::Kubernetes {
            context: Some("kind-dev".into()),
            namespace: "default".into()
        })
    );
    assert_eq!(k8s.slots.len(), 1);
}

#[test]
fn an_engine_environment_names_no_nodes_of_its_own() {
    let text = ENGINE.replace(
        "    engine: { kind: swarm }\n",
        "    engine: { kind: swarm }\n    nodes: [{ name: web, services: [catalog] }]\n",
    );
    let out = errors(&text);
    assert!(
        out.contains(
            "environment `swarm` runs on swarm, which places its instances: it takes no `nodes`"
        ),
        "{out}"
    );
    assert!(out.contains("wharf.yaml:10:5"), "{out}");
    assert!(out.contains("pools: { SERVICE: { count: N } }"), "{out}");
}

#[test]
fn a_swarm_takes_no_kubernetes_namespace() {
    let text = ENGINE.replace(
        "engine: { kind: swarm }",
        "engine: { kind: swarm, namespace: shop }",
    );
    let out = errors(&text);
    assert!(
        out.contains("`namespace` is for `kind: kubernetes`"),
        "{out}"
    );
}

#[test]
fn an_unknown_engine_kind_is_refused_with_the_kinds_there_are() {
    let text = ENGINE.replace("kind: swarm", "kind: nomad");
    let out = errors(&text);
    assert!(out.contains("nomad"), "{out}");
    assert!(out.contains("swarm"), "{out}");
}
