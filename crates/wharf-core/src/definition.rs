//! Loading a definition: YAML -> marked tree -> structural check -> raw types -> semantic
//! validation -> [`Definition`]. Every stage collects all of its problems before failing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::diagnostic::DefinitionErrors;
use crate::model::*;
use crate::raw::*;
use crate::suggest::hint_for;
use crate::template;
use crate::yaml::{self, Node as YamlNode, PathSegment, YamlProblem};

/// What validation needs to know about the files around the definition. The real
/// implementation looks at the disk; tests pass a fake.
pub trait FolderCheck {
    /// Whether `relative` (to the definition file's folder) is an existing folder.
    fn is_folder(&self, relative: &str) -> bool;

    /// The text of the file `relative` names (an env file, a file template), which goes
    /// into the definition's revision beside wharf.yaml.
    fn read_file(&self, relative: &str) -> Result<String, String> {
        Err(format!("`{relative}` cannot be read here"))
    }
}

/// The files a definition read, as submitted with it (path as written -> text): the
/// controller loads a revision from its text and these, never from its own disk.
pub struct Bundled<'a>(pub &'a BTreeMap<String, String>);

impl FolderCheck for Bundled<'_> {
    fn is_folder(&self, _: &str) -> bool {
        true
    }

    fn read_file(&self, relative: &str) -> Result<String, String> {
        self.0.get(relative).cloned().ok_or_else(|| {
            format!("`{relative}` was not submitted with the definition (submit it with `wharf apply` from the project folder)")
        })
    }
}

/// Accepts every folder; for callers that validate a definition away from its files.
pub struct AnyFolder;

impl FolderCheck for AnyFolder {
    fn is_folder(&self, _: &str) -> bool {
        true
    }
}

const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_millis(100);
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses and validates a definition file's text.
pub fn load(
    text: &str,
    file: &str,
    folders: &dyn FolderCheck,
) -> Result<Definition, DefinitionErrors> {
    let fail = |problems| DefinitionErrors {
        file: file.to_owned(),
        source_text: text.to_owned(),
        problems,
    };
    let tree = yaml::parse(text).map_err(|p| fail(vec![p]))?;
    let (json, mut problems) = crate::structure::check(&tree, &json_schema());
    let raw: RawDefinition = match serde_json::from_value(json) {
        Ok(raw) => raw,
        // Only reachable when the structural check already explained what is wrong.
        Err(_) if !problems.is_empty() => return Err(fail(problems)),
        Err(e) => {
            let location = tree.location;
            return Err(fail(vec![YamlProblem {
                location,
                message: format!("unreadable definition: {e}"),
                hint: None,
            }]));
        }
    };
    // Structural problems that left the rest readable (an unknown key, say) do not hide
    // the semantic ones: the user gets every error of the file in one run.
    let mut checker = Checker {
        tree: &tree,
        problems: Vec::new(),
    };
    let definition = checker.resolve(&raw, folders);
    problems.extend(checker.problems);
    problems.sort_by_key(|p| (p.location.line, p.location.column));
    if problems.is_empty() {
        Ok(definition)
    } else {
        Err(fail(problems))
    }
}

pub(crate) struct Checker<'t> {
    tree: &'t YamlNode,
    problems: Vec<YamlProblem>,
}

pub(crate) fn key(k: &str) -> PathSegment {
    PathSegment::Key(k.to_owned())
}

impl Checker<'_> {
    pub(crate) fn report(&mut self, path: &[PathSegment], message: String, hint: Option<String>) {
        self.problems.push(YamlProblem {
            location: self.tree.locate(path),
            message,
            hint,
        });
    }

    fn duration(
        &mut self,
        text: Option<&String>,
        default: Duration,
        path: &[PathSegment],
    ) -> Duration {
        match text.map(|t| crate::duration::parse(t)) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.report(
                    path,
                    e,
                    Some("write a number with a unit, such as `5s` or `200ms`".into()),
                );
                default
            }
        }
    }

    fn resolve(&mut self, raw: &RawDefinition, folders: &dyn FolderCheck) -> Definition {
        let services: BTreeMap<String, Service> = raw
            .services
            .iter()
            .map(|(name, s)| (name.clone(), self.service(name, s, folders)))
            .collect();
        let service_names: Vec<&str> = services.keys().map(String::as_str).collect();
        let environments: BTreeMap<String, Environment> = raw
            .environments
            .iter()
            .map(|(name, e)| {
                (
                    name.clone(),
                    self.environment(name, e, &service_names, folders),
                )
            })
            .collect();
        let pipeline = self.pipeline(&raw.environments);
        let definition = Definition {
            services,
            environments,
            pipeline,
        };
        let mut definition = definition;
        self.templates(&definition);
        self.drivers(&definition);
        self.volume_folders_declared(&definition);
        for (name, environment) in &raw.environments {
            if let Some(ingress) = &environment.ingress {
                let checked = crate::ingress::check(self, &definition, name, ingress);
                if let Some(env) = definition.environments.get_mut(name) {
                    env.ingress = Some(checked);
                }
            }
        }
        crate::ingress::check_shared_ports(self, &definition);
        definition
    }

    /// A node may not run an image's service with the process driver: an image has no
    /// command of its own to run as a process.
    fn drivers(&mut self, definition: &Definition) {
        for (env, environment) in &definition.environments {
            for node in &environment.nodes {
                if node.driver != Some(DriverKind::Process) {
                    continue;
                }
                for (service, _) in &node.services {
                    if definition
                        .services
                        .get(service)
                        .is_some_and(|s| s.image.is_some())
                    {
                        self.report(
                            &[key("environments"), key(env), key("nodes")],
                            format!(
                                "node `{}` of environment `{env}` has `driver: process`, but service `{service}` runs an image",
                                node.name
                            ),
                            Some("drop the node's `driver` (images run with `driver: docker`), or give the service a `build`".into()),
                        );
                    }
                }
            }
        }
    }

    fn service(&mut self, name: &str, raw: &RawService, folders: &dyn FolderCheck) -> Service {
        let at = |rest: &[&str]| {
            let mut path = vec![key("services"), key(name)];
            path.extend(rest.iter().map(|k| key(k)));
            path
        };
        check_name(self, name, "service", &at(&[]));
        let build = match (&raw.build, &raw.image) {
            (Some(build), None) => Some(self.build(name, build, folders)),
            (None, Some(_)) => None,
            (Some(_), Some(_)) => {
                self.report(
                    &at(&["image"]),
                    format!("service `{name}` has both `build` and `image`"),
                    Some(
                        "keep one: `build` for a folder wharf packs, `image` for a Docker image"
                            .into(),
                    ),
                );
                None
            }
            (None, None) => {
                self.report(&at(&[]), format!("service `{name}` has neither `build` nor `image`"), Some("add `build: ./folder` (packed by wharf) or `image: name:tag` (a local Docker image)".into()));
                None
            }
        };
        let driver = match (raw.driver, &raw.image) {
            (Some(RawDriver::Docker), _) | (None, Some(_)) => DriverKind::Docker,
            _ => DriverKind::Process,
        };
        if raw.image.is_some() && raw.driver == Some(RawDriver::Process) {
            self.report(
                &at(&["driver"]),
                format!("service `{name}` runs an image, which needs `driver: docker`"),
                None,
            );
        }
        if build.is_some() && (raw.run.is_empty() || raw.run[0].trim().is_empty()) {
            self.report(
                &at(&["run"]),
                format!("service `{name}` has an empty `run` command"),
                Some(
                    "give the program and its arguments, e.g. `run: [\"python3\", \"app.py\"]`"
                        .into(),
                ),
            );
        }
        let port = raw.port.as_ref().map(|p| match p {
            RawPort::Fixed(n) => PortSpec::Fixed(*n),
            RawPort::Named(n) => PortSpec::Named(n.clone()),
            RawPort::Mapped(m) => match m.host {
                Some(n) => PortSpec::Fixed(n),
                None => PortSpec::Named(m.name.clone().unwrap_or_else(|| "http".into())),
            },
        });
        let container_port = self.container_port(name, raw, driver, &at(&["port"]));
        if raw.entrypoint.is_some() && raw.image.is_none() {
            self.report(
                &at(&["entrypoint"]),
                format!("service `{name}` has an `entrypoint` but runs no image"),
                Some("`entrypoint` replaces an image's ENTRYPOINT; a `build` service runs `run` as it stands".into()),
            );
        }
        let mut config = raw.config.clone();
        if let Some(paths) = &raw.env_file {
            for (k, v) in self.env_files(paths, &at(&["env_file"]), folders) {
                config.entry(k).or_insert(v);
            }
        }
        let files = self.instance_files(name, raw, folders);
        if port == Some(PortSpec::Fixed(0)) {
            self.report(
                &at(&["port"]),
                "port 0 is not a usable port".into(),
                Some("use a name such as `http` to let wharf pick free ports".into()),
            );
        }
        let health = raw
            .health
            .as_ref()
            .map(|h| self.health(name, h, port.is_some()));
        let mut rollout = self.rollout(raw, &at(&["rollout"]));
        if rollout.strategy.splits() {
            rollout.strategy = self.strategy(raw, &port, &at(&["rollout"]));
        }
        if raw.max_parallel == Some(0) {
            self.report(
                &at(&["max_parallel"]),
                "`max_parallel` must be at least 1".into(),
                None,
            );
        }
        Service {
            name: name.to_owned(),
            build,
            run: raw.run.clone(),
            port,
            health,
            config,
            files,
            entrypoint: raw.entrypoint.clone(),
            working_dir: self.working_dir(raw, &at(&["working_dir"])),
            ports: self.extra_ports(name, raw, driver, &at(&["ports"])),
            volumes: self.volumes(name, raw, driver, &at(&["volumes"])),
            user: self.user(raw, &at(&["user"])),
            dev: crate::dev::check(self, raw.dev.as_ref(), &at(&["dev"])),
            container_port,
            driver,
            image: raw.image.clone(),
            stop_timeout: self.duration(
                raw.stop_timeout.as_ref(),
                DEFAULT_STOP_TIMEOUT,
                &at(&["stop_timeout"]),
            ),
            stop_signal: self.stop_signal(raw, &at(&["stop_signal"])),
            resources: self.resources(raw.resources.as_ref(), &at(&["resources"])),
            logs: self.logs(raw.logs.as_ref(), &at(&["logs"])),
            address_port: raw.address_port,
            tcp: raw.protocol == Some(crate::raw::RawProtocol::Tcp),
            min_healthy_time: raw.min_healthy_time.as_ref().map(|given| {
                self.duration(Some(given), Duration::ZERO, &at(&["min_healthy_time"]))
            }),
            max_parallel: raw.max_parallel.unwrap_or(1).max(1),
            on_change: self.on_change(name, raw),
            rollout,
            response_timeout: self.duration(
                raw.response_timeout.as_ref(),
                crate::model::DEFAULT_RESPONSE_TIMEOUT,
                &at(&["response_timeout"]),
            ),
        }
    }

    /// The container's own port of `port: { container: N }`, which needs a container.
    fn container_port(
        &mut self,
        name: &str,
        raw: &RawService,
        driver: DriverKind,
        path: &[PathSegment],
    ) -> Option<u16> {
        let Some(RawPort::Mapped(mapped)) = &raw.port else {
            return None;
        };
        if driver != DriverKind::Docker {
            self.report(
                path,
                format!("service `{name}` maps a container port but does not run a container"),
                Some("`port: { container: N }` needs `image:` or `driver: docker`; a process listens on `{{ port }}`".into()),
            );
        }
        if mapped.container == 0 || mapped.host == Some(0) {
            self.report(path, "port 0 is not a usable port".into(), None);
        }
        if mapped.name.is_some() && mapped.host.is_some() {
            self.report(
                path,
                format!("service `{name}`'s port has both `name` and `host`"),
                Some(
                    "keep `name` (wharf assigns a port per instance) or `host` (a fixed number)"
                        .into(),
                ),
            );
        }
        Some(mapped.container)
    }

    /// The values of env files, each checked, the later file winning.
    fn env_files(
        &mut self,
        paths: &RawPaths,
        path: &[PathSegment],
        folders: &dyn FolderCheck,
    ) -> BTreeMap<String, String> {
        let mut values = BTreeMap::new();
        for file in paths.paths() {
            let text = match folders.read_file(file) {
                Ok(text) => text,
                Err(e) => {
                    self.report(
                        path,
                        format!("cannot read env file `{file}`: {e}"),
                        Some("env files are read relative to wharf.yaml's folder".into()),
                    );
                    continue;
                }
            };
            match crate::files::parse_env_file(&text) {
                Ok(pairs) => {
                    for (k, v) in pairs {
                        match crate::files::literal(&v) {
                            Some(v) => {
                                values.insert(k, v);
                            }
                            None => self.report(
                                path,
                                format!("{file}: the value of `{k}` contains `endraw`, which an env file's value cannot hold"),
                                Some("set it with `wharf config set` or `wharf secret set` instead".into()),
                            ),
                        }
                    }
                }
                Err(e) => self.report(
                    path,
                    format!("{file}:{}: {}", e.line, e.message),
                    Some("env files hold `KEY=VALUE` lines and `# comments`".into()),
                ),
            }
        }
        values
    }

    /// `files:` of a service: path -> template text, each path checked and each
    /// template read.
    fn instance_files(
        &mut self,
        name: &str,
        raw: &RawService,
        folders: &dyn FolderCheck,
    ) -> BTreeMap<String, String> {
        let mut files = BTreeMap::new();
        for (path, file) in &raw.files {
            let at = [key("services"), key(name), key("files"), key(path)];
            if let Some(problem) = crate::files::instance_file_problem(path) {
                self.report(
                    &at,
                    format!("file {problem}"),
                    Some("name a file relative to the instance's data folder, such as `nginx.conf` or `conf.d/site.conf`".into()),
                );
                continue;
            }
            let text = match (&file.template, &file.content) {
                (Some(template), None) => match folders.read_file(template) {
                    Ok(text) => text,
                    Err(e) => {
                        self.report(
                            &at,
                            format!("cannot read template `{template}`: {e}"),
                            Some("templates are read relative to wharf.yaml's folder".into()),
                        );
                        continue;
                    }
                },
                (None, Some(content)) => content.clone(),
                _ => {
                    self.report(
                        &at,
                        format!("file `{path}` of service `{name}` needs exactly one of `template` and `content`"),
                        Some("`template: ./file.tmpl` reads a file beside wharf.yaml; `content:` gives the text inline".into()),
                    );
                    continue;
                }
            };
            files.insert(path.clone(), text);
        }
        files
    }

    fn rollout(&mut self, raw: &RawService, path: &[PathSegment]) -> crate::rollout::Rollout {
        let mut rollout = crate::rollout::Rollout::default();
        // `max_parallel` predates `rollout:`: it sets how many are replaced at once.
        if let Some(n) = raw.max_parallel.filter(|n| *n > 0) {
            rollout.limits.max_surge = n;
        }
        let Some(given) = &raw.rollout else {
            return rollout;
        };
        let sub = |k: &str| {
            let mut p = path.to_vec();
            p.extend([key(k), PathSegment::Value]);
            p
        };
        if let Some(n) = given.max_surge {
            rollout.limits.max_surge = n;
        }
        if let Some(n) = given.max_unavailable {
            rollout.limits.max_unavailable = n;
        }
        if rollout.limits.max_surge == 0 && rollout.limits.max_unavailable == 0 {
            self.report(
                &sub(if given.max_unavailable.is_some() { "max_unavailable" } else { "max_surge" }),
                "`max_surge` and `max_unavailable` cannot both be 0: no instance could be replaced".into(),
                Some("set `max_surge: 1` (start each new instance beside the old one) or `max_unavailable: 1` (replace in place)".into()),
            );
        }
        rollout.drain_timeout = self.duration(
            given.drain_timeout.as_ref(),
            rollout.drain_timeout,
            &sub("drain_timeout"),
        );
        rollout.pause_timeout = self.duration(
            given.pause_timeout.as_ref(),
            rollout.pause_timeout,
            &sub("pause_timeout"),
        );
        rollout.preview_port = given.preview_port;
        if given.preview_port == Some(0) {
            self.report(
                &sub("preview_port"),
                "port 0 is not a usable port".into(),
                Some("leave `preview_port` out to let wharf pick one and keep it".into()),
            );
        }
        let rolling = matches!(
            given.strategy,
            None | Some(crate::raw::RawStrategy::Rolling)
        );
        let strategy_keys = [
            ("preview_port", given.preview_port.is_some()),
            ("scale_down_delay", given.scale_down_delay.is_some()),
            ("steps", given.steps.is_some()),
            ("pin", given.pin.is_some()),
            ("analysis", given.analysis.is_some()),
        ];
        for (name, set) in strategy_keys {
            if rolling && set {
                self.report(
                    &sub(name),
                    format!("`{name}` does not apply to a rolling rollout"),
                    Some("set `strategy: blue-green` or `strategy: canary`".into()),
                );
            }
        }
        // Settled by `strategy` once the port is known; marked here.
        if matches!(
            given.strategy,
            Some(crate::raw::RawStrategy::BlueGreen | crate::raw::RawStrategy::Canary)
        ) {
            rollout.strategy = crate::strategy::Strategy::Canary {
                steps: Vec::new(),
                pin: Default::default(),
                analysis: Default::default(),
            };
        }
        rollout
    }

    /// The blue-green or canary settings of `rollout:`: both sets run at once behind the
    /// service's address, so the service needs one and ports of wharf's choosing.
    fn strategy(
        &mut self,
        raw: &RawService,
        port: &Option<PortSpec>,
        path: &[PathSegment],
    ) -> crate::strategy::Strategy {
        use crate::raw::RawStrategy;
        use crate::strategy::{Analysis, CanaryStep, Pin, Strategy};
        let Some(given) = &raw.rollout else {
            return Strategy::Rolling;
        };
        let sub = |k: &[&str]| {
            let mut p = path.to_vec();
            p.extend(k.iter().map(|k| key(k)));
            p.push(PathSegment::Value);
            p
        };
        let named = match given.strategy {
            Some(RawStrategy::BlueGreen) => "blue-green",
            _ => "canary",
        };
        match port {
            None => self.report(
                &sub(&["strategy"]),
                format!("a {named} rollout moves traffic between two sets of instances, and this service has no `port:`, so no address to move it on"),
                Some("give the service a named port (`port: http`), or use `strategy: rolling`".into()),
            ),
            Some(PortSpec::Fixed(p)) => self.report(
                &sub(&["strategy"]),
                format!("a {named} rollout runs the new instances beside the old ones, which cannot both listen on the fixed port {p}"),
                Some("give the port a name (`port: http`) so wharf picks one per instance, and clients use the service's address (`address_port:` fixes that one)".into()),
            ),
            _ => {}
        }
        let other_keys: [(&str, bool); 4] = [
            ("scale_down_delay", given.scale_down_delay.is_some()),
            ("steps", given.steps.is_some()),
            ("pin", given.pin.is_some()),
            ("analysis", given.analysis.is_some()),
        ];
        let theirs: &[&str] = match given.strategy {
            Some(RawStrategy::BlueGreen) => &["scale_down_delay"],
            _ => &["steps", "pin", "analysis"],
        };
        for (name, set) in other_keys {
            if set && !theirs.contains(&name) {
                self.report(
                    &sub(&[name]),
                    format!("`{name}` does not apply to a {named} rollout"),
                    None,
                );
            }
        }
        if given.strategy == Some(RawStrategy::BlueGreen) {
            return Strategy::BlueGreen {
                scale_down_delay: self.duration(
                    given.scale_down_delay.as_ref(),
                    crate::strategy::DEFAULT_SCALE_DOWN_DELAY,
                    &sub(&["scale_down_delay"]),
                ),
            };
        }
        let mut steps = Vec::new();
        for (i, step) in given.steps.iter().flatten().enumerate() {
            let at = |k: &str| {
                let mut p = path.to_vec();
                p.extend([
                    key("steps"),
                    PathSegment::Index(i),
                    key(k),
                    PathSegment::Value,
                ]);
                p
            };
            if !(1..=100).contains(&step.weight) {
                self.report(
                    &at("weight"),
                    format!(
                        "a step's weight is a percentage of requests, 1 to 100, not {}",
                        step.weight
                    ),
                    None,
                );
            }
            let pause = step
                .pause
                .as_ref()
                .map(|p| match crate::duration::parse(p) {
                    Ok(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                    Err(e) => {
                        self.report(
                            &at("pause"),
                            e,
                            Some("write a number with a unit, such as `5m` or `30s`".into()),
                        );
                        0
                    }
                });
            steps.push(CanaryStep {
                weight: step.weight.clamp(1, 100) as u8,
                pause_ms: pause,
            });
        }
        if steps.is_empty() {
            self.report(
                &sub(&["strategy"]),
                "a canary rollout needs `steps`, the shares of traffic the new version takes in turn".into(),
                Some("e.g. `steps: [{ weight: 10, pause: 5m }, { weight: 50, pause: 10m }]`".into()),
            );
        }
        let mut pin = Pin::default();
        if let Some(given) = &given.pin {
            if let Some(header) = &given.header {
                if header.is_empty() || !header.bytes().all(is_token_byte) {
                    self.report(
                        &sub(&["pin", "header"]),
                        format!("`{header}` is not a header name"),
                        Some("letters, digits and `-`, e.g. `X-Canary`".into()),
                    );
                }
                pin.header = header.to_ascii_lowercase();
            }
            if let Some(cookie) = &given.cookie {
                if cookie.is_empty() || !cookie.bytes().all(is_token_byte) {
                    self.report(
                        &sub(&["pin", "cookie"]),
                        format!("`{cookie}` is not a cookie name"),
                        Some("letters, digits, `-` and `_`".into()),
                    );
                }
                pin.cookie = cookie.clone();
            }
        }
        let mut analysis = Analysis::default();
        if let Some(given) = &given.analysis {
            if let Some(text) = &given.max_error_increase {
                match parse_percent_bp(text) {
                    Some(bp) => analysis.max_error_increase_bp = bp,
                    None => self.report(
                        &sub(&["analysis", "max_error_increase"]),
                        format!("`{text}` is not a percentage"),
                        Some("e.g. `5%` or `0.5%`".into()),
                    ),
                }
            }
            analysis.max_p99_increase_ms = self
                .duration(
                    given.max_p99_increase.as_ref(),
                    Duration::from_millis(analysis.max_p99_increase_ms),
                    &sub(&["analysis", "max_p99_increase"]),
                )
                .as_millis() as u64;
            if let Some(n) = given.min_requests {
                analysis.min_requests = n;
            }
        }
        Strategy::Canary {
            steps,
            pin,
            analysis,
        }
    }

    /// `ports:`: names as templates and variables take them, each once, a container
    /// port only where a container runs.
    fn extra_ports(
        &mut self,
        service: &str,
        raw: &RawService,
        driver: DriverKind,
        path: &[PathSegment],
    ) -> Vec<crate::model::ExtraPort> {
        let mut ports: Vec<crate::model::ExtraPort> = Vec::new();
        for (i, given) in raw.ports.iter().enumerate() {
            let mut at = path.to_vec();
            at.push(PathSegment::Index(i));
            let port = match given {
                crate::raw::RawExtraPort::Name(name) => crate::model::ExtraPort {
                    name: name.clone(),
                    fixed: None,
                    container: None,
                },
                crate::raw::RawExtraPort::Mapped(m) => crate::model::ExtraPort {
                    name: m.name.clone().unwrap_or_default(),
                    fixed: m.host,
                    container: Some(m.container),
                },
            };
            let valid = port.name.len() <= 32
                && port.name.starts_with(|c: char| c.is_ascii_lowercase())
                && port
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                self.report(
                    &at,
                    format!("`{}` is not a port name of service `{service}`", port.name),
                    Some("a name of lowercase letters, digits and `_` (`admin`), as `{{ ports.admin }}` and PORT_ADMIN use it".into()),
                );
                continue;
            }
            if ports.iter().any(|p| p.name == port.name) {
                self.report(&at, format!("port `{}` is named twice", port.name), None);
                continue;
            }
            if port.container == Some(0) || port.fixed == Some(0) {
                self.report(&at, "port 0 is not a usable port".into(), None);
                continue;
            }
            if port.container.is_some() && driver != DriverKind::Docker {
                self.report(
                    &at,
                    format!(
                        "port `{}` maps a container port but `{service}` does not run a container",
                        port.name
                    ),
                    Some("give just its name; a process listens on `{{ ports.NAME }}`".into()),
                );
                continue;
            }
            ports.push(port);
        }
        ports
    }

    /// An environment's host folder for a volume the service does not declare is a typo.
    fn volume_folders_declared(&mut self, def: &Definition) {
        for (env, environment) in &def.environments {
            for (service, paths) in &environment.volumes {
                let declared = def.services.get(service).map(|s| &s.volumes);
                for inside in paths.keys() {
                    if declared.is_some_and(|d| !d.contains(inside)) {
                        let names: Vec<&str> =
                            declared.into_iter().flatten().map(String::as_str).collect();
                        self.report(
                            &[
                                key("environments"),
                                key(env),
                                key("volumes"),
                                key(service),
                                key(inside),
                            ],
                            format!("service `{service}` has no volume `{inside}`"),
                            Some(hint_for(inside, "volume", &names)),
                        );
                    }
                }
            }
        }
    }

    /// An environment's host folders for volumes: known services, absolute folders.
    /// (Whether the service declares the path is checked with the services.)
    fn environment_volumes(
        &mut self,
        env: &str,
        raw: &crate::raw::RawEnvironment,
        services: &[&str],
        base: &[PathSegment],
    ) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut kept = BTreeMap::new();
        for (service, paths) in &raw.volumes {
            let mut at = base.to_vec();
            at.extend([key("volumes"), key(service)]);
            if !known(services, service) {
                self.report(
                    &at,
                    format!("environment `{env}` has volumes for unknown service `{service}`"),
                    Some(hint_for(service, "service", services)),
                );
                continue;
            }
            for (inside, host) in paths {
                if !host.starts_with('/') || host.split('/').any(|p| p == "..") {
                    let mut at = at.clone();
                    at.extend([key(inside), PathSegment::Value]);
                    self.report(
                        &at,
                        format!("`{host}` is not an absolute folder of the host"),
                        Some(
                            "e.g. `/srv/postgres`; each instance gets a folder of its own below it"
                                .into(),
                        ),
                    );
                    continue;
                }
                kept.entry(service.clone())
                    .or_insert_with(BTreeMap::new)
                    .insert(
                        inside.trim_end_matches('/').to_owned(),
                        host.trim_end_matches('/').to_owned(),
                    );
            }
        }
        kept
    }

    /// `volumes:`: absolute paths inside a container, each once.
    fn volumes(
        &mut self,
        service: &str,
        raw: &RawService,
        driver: DriverKind,
        path: &[PathSegment],
    ) -> Vec<String> {
        if !raw.volumes.is_empty() && driver != DriverKind::Docker {
            self.report(
                path,
                format!("service `{service}` has volumes but does not run a container"),
                Some("a process keeps its data in its own folder, `{{ data_dir }}`".into()),
            );
            return Vec::new();
        }
        let mut volumes: Vec<String> = Vec::new();
        for (i, given) in raw.volumes.iter().enumerate() {
            let mut at = path.to_vec();
            at.push(PathSegment::Index(i));
            let clean = given.trim_end_matches('/');
            if !given.starts_with('/')
                || clean.is_empty()
                || given.contains(':')
                || given.split('/').any(|p| p == "..")
            {
                self.report(
                    &at,
                    format!("`{given}` is not a path inside the container"),
                    Some("an absolute path such as `/var/lib/postgresql/data`; where it lives on the host is the environment's `volumes:`".into()),
                );
                continue;
            }
            if volumes.iter().any(|v| v == clean) {
                self.report(&at, format!("volume `{clean}` is listed twice"), None);
                continue;
            }
            volumes.push(clean.to_owned());
        }
        volumes
    }

    fn working_dir(&mut self, raw: &RawService, path: &[PathSegment]) -> Option<String> {
        let given = raw.working_dir.as_ref()?;
        if given.trim().is_empty() || given.contains('\0') {
            let mut at = path.to_vec();
            at.push(PathSegment::Value);
            self.report(
                &at,
                "`working_dir` is empty".to_owned(),
                Some("a path, e.g. `\"{{ data_dir }}\"`, or leave it out".to_owned()),
            );
            return None;
        }
        Some(given.clone())
    }

    /// `user`: a name as `useradd` takes it, or `UID[:GID]`.
    fn user(&mut self, raw: &RawService, path: &[PathSegment]) -> Option<String> {
        let given = raw.user.as_ref()?;
        if crate::files::is_user(given) {
            return Some(given.clone());
        }
        let mut at = path.to_vec();
        at.push(PathSegment::Value);
        self.report(
            &at,
            format!("`{given}` is not a user"),
            Some("a user name (`www-data`) or `UID[:GID]` (`1000:1000`)".to_owned()),
        );
        None
    }

    /// `stop_signal`, as a name without `SIG` (`QUIT`); one a stop cannot be graceful
    /// with is refused.
    fn stop_signal(&mut self, raw: &RawService, path: &[PathSegment]) -> Option<String> {
        let given = raw.stop_signal.as_ref()?;
        let name = given.trim().trim_start_matches("SIG").to_ascii_uppercase();
        const STOPPING: [&str; 7] = ["TERM", "INT", "QUIT", "HUP", "USR1", "USR2", "WINCH"];
        if STOPPING.contains(&name.as_str()) {
            return Some(name);
        }
        let mut at = path.to_vec();
        at.push(PathSegment::Value);
        self.report(
            &at,
            format!("`{given}` is not a signal a stop can start with"),
            Some(format!(
                "one of {} (a stop ends with SIGKILL after `stop_timeout` anyway)",
                STOPPING.join(", ")
            )),
        );
        None
    }

    fn on_change(&mut self, name: &str, raw: &RawService) -> OnChange {
        let signal = raw
            .reload_signal
            .as_deref()
            .map(|s| s.trim_start_matches("SIG").to_ascii_uppercase());
        if let Some(signal) = signal
            .as_ref()
            .filter(|s| !RELOAD_SIGNALS.contains(&s.as_str()))
        {
            self.report(
                &[key("services"), key(name), key("reload_signal")],
                format!("`{signal}` is not a signal wharf sends for a reload"),
                Some(format!("use one of {}", RELOAD_SIGNALS.join(", "))),
            );
        }
        match raw.on_change {
            Some(RawOnChange::Reload) => OnChange::Reload {
                signal: signal.unwrap_or_else(|| "HUP".into()),
            },
            _ => {
                if raw.reload_signal.is_some() {
                    self.report(
                        &[key("services"), key(name), key("reload_signal")],
                        "`reload_signal` is used only with `on_change: reload`".into(),
                        Some("add `on_change: reload`, or remove `reload_signal`".into()),
                    );
                }
                OnChange::Restart
            }
        }
    }

    fn build(&mut self, name: &str, raw: &RawBuild, folders: &dyn FolderCheck) -> Build {
        let at = |rest: &[&str]| {
            let mut path = vec![key("services"), key(name), key("build")];
            path.extend(rest.iter().map(|k| key(k)));
            path
        };
        let build = match raw {
            RawBuild::Folder(folder) => Build {
                context: folder.clone(),
                command: None,
                output: folder.clone(),
                include: Vec::new(),
            },
            RawBuild::Step(step) => Build {
                context: step.context.clone(),
                command: step.command.clone(),
                output: match &step.output {
                    Some(out) => join(&step.context, out),
                    None => step.context.clone(),
                },
                include: step.include.clone(),
            },
        };
        if !folders.is_folder(&build.context) {
            let mut path = match raw {
                RawBuild::Folder(_) => at(&[]),
                RawBuild::Step(_) => at(&["context"]),
            };
            path.push(PathSegment::Value);
            self.report(
                &path,
                format!(
                    "build folder `{}` of service `{name}` does not exist",
                    build.context
                ),
                Some("paths are relative to the folder that holds wharf.yaml".into()),
            );
        }
        if build.command.as_ref().is_some_and(Vec::is_empty) {
            self.report(&at(&["command"]), "build command is empty".into(), None);
        }
        build
    }

    fn health(&mut self, service: &str, raw: &RawHealth, has_port: bool) -> HealthCheck {
        let path = vec![key("services"), key(service), key("health")];
        let mut probes = Vec::new();
        if let Some(p) = &raw.http {
            let path = if p.starts_with('/') {
                p.clone()
            } else {
                format!("/{p}")
            };
            probes.push(Probe::Http { path });
        }
        if raw.tcp == Some(true) {
            probes.push(Probe::Tcp);
        }
        if let Some(argv) = &raw.command {
            if argv.is_empty() {
                let mut p = path.clone();
                p.push(key("command"));
                self.report(&p, "health command is empty".into(), None);
            }
            probes.push(Probe::Command { argv: argv.clone() });
        }
        if probes.len() != 1 {
            self.report(
                &path,
                format!("health check of service `{service}` needs exactly one of `http`, `tcp` or `command`, found {}", probes.len()),
                Some("for example `health: { http: /health }`".into()),
            );
        }
        let probe = probes.pop().unwrap_or(Probe::Tcp);
        if matches!(probe, Probe::Http { .. } | Probe::Tcp) && !has_port {
            self.report(
                &path,
                format!("service `{service}` has an http or tcp health check but no `port`"),
                Some("add `port: http` so wharf gives each instance a port to check".into()),
            );
        }
        let at = |k: &str| {
            let mut p = path.clone();
            p.push(key(k));
            p
        };
        let (timeout_path, interval_path) = (at("timeout"), at("interval"));
        let mut threshold = |k: &str, given: Option<u32>| match given {
            None => 2,
            Some(n @ 1..=100) => n,
            Some(n) => {
                let mut p = at(k);
                p.push(PathSegment::Value);
                self.report(
                    &p,
                    format!("`{k}: {n}` is not a usable number of checks"),
                    Some("use 1 to 100 (default 2)".into()),
                );
                2
            }
        };
        let (fall, rise) = (threshold("fall", raw.fall), threshold("rise", raw.rise));
        let unhealthy_after = match raw.unhealthy_after {
            None => 3,
            Some(n @ 0..=100) => n,
            Some(n) => {
                let mut p = at("unhealthy_after");
                p.push(PathSegment::Value);
                self.report(
                    &p,
                    format!("`unhealthy_after: {n}` is not a usable number of checks"),
                    Some("use 1 to 100 (default 3), or 0 never to restart on failed checks".into()),
                );
                3
            }
        };
        HealthCheck {
            fall,
            rise,
            unhealthy_after,
            probe,
            timeout: self.duration(raw.timeout.as_ref(), DEFAULT_HEALTH_TIMEOUT, &timeout_path),
            interval: self.duration(
                raw.interval.as_ref(),
                DEFAULT_HEALTH_INTERVAL,
                &interval_path,
            ),
        }
    }

    fn resources(
        &mut self,
        raw: Option<&RawResources>,
        path: &[PathSegment],
    ) -> crate::placement::Resources {
        let Some(raw) = raw else {
            return Default::default();
        };
        let sub = |k: &str| {
            let mut p = path.to_vec();
            p.extend([key(k), PathSegment::Value]);
            p
        };
        let (cpu_path, memory_path) = (sub("cpu"), sub("memory"));
        let cpu_millis = match raw.cpu.map(crate::quantity::cpu_millis) {
            None => 0,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                self.report(
                    &cpu_path,
                    e,
                    Some("give cores as a number, such as `0.5`".into()),
                );
                0
            }
        };
        let memory_bytes = match raw.memory.as_deref().map(crate::quantity::parse_memory) {
            None => 0,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                self.report(
                    &memory_path,
                    e,
                    Some("write a size such as `256Mi` or `1Gi`".into()),
                );
                0
            }
        };
        crate::placement::Resources {
            cpu_millis,
            memory_bytes,
        }
    }

    fn logs(
        &mut self,
        raw: Option<&crate::raw::RawLogs>,
        path: &[PathSegment],
    ) -> crate::model::LogLimits {
        use crate::model::LogLimits;
        let mut limits = LogLimits::default();
        let Some(raw) = raw else {
            return limits;
        };
        let sub = |k: &str| {
            let mut p = path.to_vec();
            p.extend([key(k), PathSegment::Value]);
            p
        };
        match raw.max_size.as_deref().map(crate::quantity::parse_memory) {
            None => {}
            Some(Ok(bytes)) if bytes >= LogLimits::MIN_BYTES => limits.max_bytes = bytes,
            Some(Ok(_)) => self.report(
                &sub("max_size"),
                "a log smaller than 4Ki would rotate at almost every line".to_owned(),
                Some("write a size such as `10Mi`".into()),
            ),
            Some(Err(e)) => self.report(
                &sub("max_size"),
                e,
                Some("write a size such as `10Mi` or `1Gi`".into()),
            ),
        }
        match raw.keep {
            None => {}
            Some(keep) if (1..=LogLimits::MAX_KEEP).contains(&keep) => limits.keep = keep,
            Some(keep) => self.report(
                &sub("keep"),
                format!("cannot keep {keep} rotated log files"),
                Some("keep between 1 and 100".into()),
            ),
        }
        limits
    }

    fn pools(
        &mut self,
        env: &str,
        raw: &BTreeMap<String, RawPool>,
        services: &[&str],
        nodes: &[Node],
        base: &[PathSegment],
    ) -> BTreeMap<String, Pool> {
        let mut pools = BTreeMap::new();
        for (service, pool) in raw {
            let mut at = base.to_vec();
            at.extend([key("pools"), key(service)]);
            if !known(services, service) {
                self.report(
                    &at,
                    format!("environment `{env}` pools unknown service `{service}`"),
                    Some(hint_for(service, "service", services)),
                );
                continue;
            }
            if nodes
                .iter()
                .any(|n| n.services.iter().any(|(s, _)| s == service))
            {
                self.report(
                    &at,
                    format!(
                        "service `{service}` is both on nodes and pooled in environment `{env}`"
                    ),
                    Some("either name its nodes or let wharf place it, not both".into()),
                );
            }
            if pool.count == 0 || pool.max_per_host == Some(0) {
                self.report(
                    &at,
                    format!("the pool of `{service}` in `{env}` has a count or max_per_host of 0"),
                    Some("remove the pool instead".into()),
                );
            }
            let spread = match pool.spread {
                Some(RawSpread::None) => crate::placement::Spread::None,
                _ => crate::placement::Spread::Host,
            };
            pools.insert(
                service.clone(),
                Pool {
                    count: pool.count,
                    spread,
                    max_per_host: pool.max_per_host,
                },
            );
        }
        pools
    }

    fn hosts(
        &mut self,
        raw: &RawHosts,
        raw_nodes: &Option<Vec<RawNode>>,
        nodes: &[Node],
        base: &[PathSegment],
    ) -> HostsSpec {
        let provider = match raw.provider {
            RawProvider::Netns => Provider::Netns,
            RawProvider::Docker => Provider::Docker,
            RawProvider::Static => Provider::Static,
            RawProvider::Ssh => Provider::Ssh,
        };
        let mut at = base.to_vec();
        at.push(key("hosts"));
        if provider == Provider::Ssh {
            let ssh = crate::ssh_hosts::check(self, raw, &at);
            let names = ssh.machines.iter().map(|m| m.name.clone()).collect();
            return HostsSpec {
                provider,
                names,
                ssh: Some(ssh),
            };
        }
        for set in crate::ssh_hosts::ssh_keys_set(raw) {
            self.report(
                &[at.clone(), vec![key(set)]].concat(),
                format!("`{set}` applies only to `provider: ssh`"),
                Some("remove it, or use `provider: ssh`".into()),
            );
        }
        let names: Vec<String> = match (&raw.names, raw.count) {
            (Some(names), _) => names.clone(),
            (None, Some(count)) => {
                let prefix = raw.prefix.as_deref().unwrap_or("host");
                (1..=count).map(|i| format!("{prefix}-{i}")).collect()
            }
            (None, None) if raw_nodes.is_some() => nodes.iter().map(|n| n.name.clone()).collect(),
            (None, None) => Vec::new(),
        };
        if names.is_empty() {
            self.report(
                &at,
                "the environment's hosts are neither named nor counted".into(),
                Some("add `count: 3` or `names: [a, b]`".into()),
            );
        }
        for name in &names {
            check_name(self, name, "host", &at);
        }
        HostsSpec {
            provider,
            names,
            ssh: None,
        }
    }

    fn environment(
        &mut self,
        name: &str,
        raw: &RawEnvironment,
        services: &[&str],
        folders: &dyn FolderCheck,
    ) -> Environment {
        let base = vec![key("environments"), key(name)];
        check_name(self, name, "environment", &base);
        // An env file sits beneath the environment's `config:` of the same service.
        let mut config = raw.config.clone();
        for (service, paths) in &raw.env_file {
            let mut p = base.clone();
            p.extend([key("env_file"), key(service)]);
            if !known(services, service) {
                self.report(
                    &p,
                    format!("environment `{name}` has an env file for unknown service `{service}`"),
                    Some(hint_for(service, "service", services)),
                );
                continue;
            }
            let from_files = self.env_files(paths, &p, folders);
            let layer = config.entry(service.clone()).or_default();
            for (k, v) in from_files {
                layer.entry(k).or_insert(v);
            }
        }
        for service in raw.config.keys() {
            if !known(services, service) {
                let mut p = base.clone();
                p.extend([key("config"), key(service)]);
                self.report(
                    &p,
                    format!("environment `{name}` configures unknown service `{service}`"),
                    Some(hint_for(service, "service", services)),
                );
            }
        }
        let nodes = match &raw.nodes {
            None => vec![Node {
                name: "local".into(),
                services: services
                    .iter()
                    .filter(|s| !raw.pools.contains_key(**s))
                    .map(|s| (s.to_string(), 1))
                    .collect(),
                config: BTreeMap::new(),
                driver: None,
            }],
            Some(nodes) => self.nodes(name, nodes, services, &base),
        };
        let pools = self.pools(name, &raw.pools, services, &nodes, &base);
        let hosts = raw
            .hosts
            .as_ref()
            .map(|h| self.hosts(h, &raw.nodes, &nodes, &base));
        let approval = match raw.approval {
            Some(RawApproval::Required) => Some(self.duration(
                raw.approval_expires.as_ref(),
                Duration::from_secs(24 * 3600),
                &[key("environments"), key(name), key("approval_expires")],
            )),
            _ => None,
        };
        if raw.dev == Some(true) && approval.is_some() {
            self.report(
                &[key("environments"), key(name), key("dev")],
                format!(
                    "`{name}` waits for approval of every deploy, so `wharf dev` cannot run there"
                ),
                Some("remove `dev: true`, or `approval: required`".into()),
            );
        }
        let volumes = self.environment_volumes(name, raw, services, &base);
        let engine = raw
            .engine
            .as_ref()
            .map(|engine| self.engine(name, raw, engine, &base));
        Environment {
            engine,
            volumes,
            // Checked once the services are known (`ingresses`).
            ingress: None,
            approval,
            resume_interrupted: raw.recovery == Some(crate::raw::RawRecovery::Resume),
            dev: raw.dev,
            name: name.to_owned(),
            after: raw.after.clone(),
            config,
            nodes,
            pools,
            hosts,
        }
    }

    /// An environment's cluster engine: the engine places instances, so the
    /// environment names no nodes and no hosts of its own.
    fn engine(
        &mut self,
        env: &str,
        raw: &RawEnvironment,
        engine: &crate::raw::RawEngine,
        base: &[PathSegment],
    ) -> Engine {
        let at = |k: &str| {
            let mut p = base.to_vec();
            p.push(key(k));
            p
        };
        let kind = match engine.kind {
            crate::raw::RawEngineKind::Swarm => "swarm",
            crate::raw::RawEngineKind::Kubernetes => "kubernetes",
        };
        for (field, given) in [
            ("nodes", raw.nodes.is_some()),
            ("hosts", raw.hosts.is_some()),
        ] {
            if given {
                self.report(
                    &at(field),
                    format!("environment `{env}` runs on {kind}, which places its instances: it takes no `{field}`"),
                    Some("remove it; give a service's replicas as `pools: { SERVICE: { count: N } }`".into()),
                );
            }
        }
        match engine.kind {
            crate::raw::RawEngineKind::Swarm => {
                for (field, given) in [
                    ("context", engine.context.is_some()),
                    ("namespace", engine.namespace.is_some()),
                ] {
                    if given {
                        let mut p = at("engine");
                        p.push(key(field));
                        self.report(
                            &p,
                            format!("`{field}` is for `kind: kubernetes`; a swarm is the Docker engine's own"),
                            Some(format!("remove `{field}`")),
                        );
                    }
                }
                Engine::Swarm
            }
            crate::raw::RawEngineKind::Kubernetes => Engine::Kubernetes {
                context: engine.context.clone(),
                namespace: engine.namespace.clone().unwrap_or_else(|| "default".into()),
            },
        }
    }

    fn nodes(
        &mut self,
        env: &str,
        raw: &[RawNode],
        services: &[&str],
        base: &[PathSegment],
    ) -> Vec<Node> {
        let mut seen = BTreeSet::new();
        let mut nodes = Vec::new();
        for (i, node) in raw.iter().enumerate() {
            let mut at = base.to_vec();
            at.extend([key("nodes"), PathSegment::Index(i)]);
            let sub = |k: &str| {
                let mut p = at.clone();
                p.push(key(k));
                p
            };
            check_name(self, &node.name, "node", &sub("name"));
            if !seen.insert(node.name.clone()) {
                self.report(
                    &sub("name"),
                    format!(
                        "node `{}` is defined twice in environment `{env}`",
                        node.name
                    ),
                    Some("node names must be unique within an environment".into()),
                );
            }
            let mut placed = Vec::new();
            for (j, placement) in node.services.iter().enumerate() {
                let (service, instances) = match placement {
                    RawPlacement::Name(s) => (s.clone(), 1),
                    RawPlacement::Counted(c) => (c.name.clone(), c.instances),
                };
                let mut p = sub("services");
                p.push(PathSegment::Index(j));
                if !known(services, &service) {
                    self.report(
                        &p,
                        format!(
                            "node `{}` of environment `{env}` runs unknown service `{service}`",
                            node.name
                        ),
                        Some(hint_for(&service, "service", services)),
                    );
                } else if placed.iter().any(|(s, _): &(String, u32)| *s == service) {
                    self.report(
                        &p,
                        format!(
                            "service `{service}` is listed twice on node `{}`",
                            node.name
                        ),
                        Some("use `{ name: SERVICE, instances: N }` for several instances".into()),
                    );
                } else if instances == 0 {
                    self.report(
                        &p,
                        format!(
                            "service `{service}` on node `{}` has 0 instances",
                            node.name
                        ),
                        Some("remove it from the node instead".into()),
                    );
                } else {
                    placed.push((service, instances));
                }
            }
            for service in node.config.keys() {
                if !placed.iter().any(|(s, _)| s == service) {
                    let mut p = sub("config");
                    p.push(key(service));
                    self.report(
                        &p,
                        format!(
                            "node `{}` configures service `{service}`, which it does not run",
                            node.name
                        ),
                        Some(hint_for(
                            service,
                            "service",
                            &placed.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
                        )),
                    );
                }
            }
            let count = node.count.unwrap_or(1);
            if count == 0 {
                self.report(
                    &sub("count"),
                    format!("node `{}` has count 0", node.name),
                    Some("remove the node instead".into()),
                );
            }
            let driver = node.driver.map(|d| match d {
                RawDriver::Process => DriverKind::Process,
                RawDriver::Docker => DriverKind::Docker,
            });
            for k in 1..=count {
                let name = if count == 1 && node.count.is_none() {
                    node.name.clone()
                } else {
                    format!("{}-{k}", node.name)
                };
                nodes.push(Node {
                    name,
                    services: placed.clone(),
                    config: node.config.clone(),
                    driver,
                });
            }
        }
        nodes
    }

    /// Orders environments so each follows its `after`; reports unknown names and cycles.
    fn pipeline(&mut self, envs: &BTreeMap<String, RawEnvironment>) -> Vec<String> {
        let names: Vec<&str> = envs.keys().map(String::as_str).collect();
        for (name, env) in envs {
            if let Some(after) = env.after.as_ref().filter(|a| !envs.contains_key(*a)) {
                self.report(
                    &[
                        key("environments"),
                        key(name),
                        key("after"),
                        PathSegment::Value,
                    ],
                    format!("environment `{name}` comes after unknown environment `{after}`"),
                    Some(hint_for(after, "environment", &names)),
                );
            }
        }
        let mut order: Vec<String> = Vec::new();
        let mut remaining: Vec<&String> = envs.keys().collect();
        while !remaining.is_empty() {
            let ready: Vec<&String> = remaining
                .iter()
                .copied()
                .filter(|n| match &envs[*n].after {
                    Some(a) if envs.contains_key(a) => order.contains(a),
                    _ => true,
                })
                .collect();
            if ready.is_empty() {
                let cycle: Vec<&str> = remaining.iter().map(|s| s.as_str()).collect();
                self.report(
                    &[key("environments"), key(cycle[0]), key("after")],
                    format!("the `after` order has a cycle among {}", cycle.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")),
                    Some("the pipeline must start somewhere: remove `after` from the first environment".into()),
                );
                break;
            }
            remaining.retain(|n| !ready.contains(n));
            order.extend(ready.into_iter().cloned());
        }
        order
    }

    /// Every config value must be a valid template using only known names.
    fn templates(&mut self, def: &Definition) {
        let service_names: Vec<&str> = def.services.keys().map(String::as_str).collect();
        let templates = template::TemplateCheck::new(&service_names);
        let base = templates;
        for (name, service) in &def.services {
            let port_names: Vec<String> = service.ports.iter().map(|p| p.name.clone()).collect();
            let templates = base.with_ports(&port_names);
            if !service.files.is_empty() {
                // A file may use any key the service's configuration has somewhere.
                let mut keys: BTreeSet<String> = service.config.keys().cloned().collect();
                for environment in def.environments.values() {
                    keys.extend(
                        environment
                            .config
                            .get(name)
                            .into_iter()
                            .flat_map(|c| c.keys().cloned()),
                    );
                    for node in &environment.nodes {
                        keys.extend(
                            node.config
                                .get(name)
                                .into_iter()
                                .flat_map(|c| c.keys().cloned()),
                        );
                    }
                }
                for (path, text) in &service.files {
                    if let Err(e) = templates.check_file(text, &keys) {
                        self.report(
                            &[key("services"), key(name), key("files"), key(path)],
                            format!("file `{path}` of service `{name}`: {e}"),
                            e.hint(),
                        );
                    }
                }
            }
            if let Some(dir) = &service.working_dir
                && let Err(e) = templates.check(dir)
            {
                self.report(
                    &[key("services"), key(name), key("working_dir")],
                    format!("`working_dir` of service `{name}`: {e}"),
                    e.hint(),
                );
            }
            for (i, arg) in service.run.iter().enumerate() {
                if let Err(e) = templates.check(arg) {
                    self.report(
                        &[
                            key("services"),
                            key(name),
                            key("run"),
                            PathSegment::Index(i),
                        ],
                        format!("`run` argument {} of service `{name}`: {e}", i + 1),
                        e.hint(),
                    );
                }
            }
            if let Some(crate::model::HealthCheck {
                probe: crate::model::Probe::Command { argv },
                ..
            }) = &service.health
            {
                for (i, arg) in argv.iter().enumerate() {
                    if let Err(e) = templates.check(arg) {
                        self.report(
                            &[
                                key("services"),
                                key(name),
                                key("health"),
                                key("command"),
                                PathSegment::Index(i),
                            ],
                            format!("health command argument {} of service `{name}`: {e}", i + 1),
                            e.hint(),
                        );
                    }
                }
            }
            for (k, v) in &service.config {
                if let Err(e) = templates.check(v) {
                    self.report(
                        &[
                            key("services"),
                            key(name),
                            key("config"),
                            key(k),
                            PathSegment::Value,
                        ],
                        format!("config `{k}` of service `{name}`: {e}"),
                        e.hint(),
                    );
                }
            }
        }
        for (env_name, env) in &def.environments {
            for (service, values) in &env.config {
                let port_names: Vec<String> = def
                    .services
                    .get(service)
                    .map(|s| s.ports.iter().map(|p| p.name.clone()).collect())
                    .unwrap_or_default();
                let templates = base.with_ports(&port_names);
                for (k, v) in values {
                    if let Err(e) = templates.check(v) {
                        self.report(&[key("environments"), key(env_name), key("config"), key(service), key(k), PathSegment::Value], format!("config `{k}` of service `{service}` in environment `{env_name}`: {e}"), e.hint());
                    }
                }
            }
        }
    }
}

/// Whether `name` is one of `services`, which is sorted (the keys of a map): a binary
/// search keeps validation linear in the size of the definition.
fn known(services: &[&str], name: &str) -> bool {
    services.binary_search(&name).is_ok()
}

/// Whether `name` may name a service, environment or host.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

/// How to write a name [`valid_name`] refuses.
pub const NAME_HINT: &str =
    "use lowercase letters, digits, `-` and `_`, starting with a letter or digit";

pub(crate) fn check_name(checker: &mut Checker<'_>, name: &str, what: &str, path: &[PathSegment]) {
    if !valid_name(name) {
        checker.report(
            path,
            format!("`{name}` is not a valid {what} name"),
            Some(NAME_HINT.into()),
        );
    }
}

fn join(base: &str, rest: &str) -> String {
    if rest.starts_with('/') || base.is_empty() || base == "." {
        rest.to_owned()
    } else {
        format!(
            "{}/{}",
            base.trim_end_matches('/'),
            rest.trim_start_matches("./")
        )
    }
}

/// A byte allowed in a header or cookie name (RFC 9110's token).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `5%` or `0.5%` (the sign optional) in basis points.
fn parse_percent_bp(text: &str) -> Option<u32> {
    let number: f64 = text.trim().trim_end_matches('%').trim().parse().ok()?;
    (0.0..=100.0)
        .contains(&number)
        .then(|| (number * 100.0).round() as u32)
}
