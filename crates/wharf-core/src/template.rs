//! Config values are minijinja templates with a strict, small vocabulary.

use std::collections::BTreeMap;
use std::fmt;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::suggest;

/// The names a config template may use.
pub const NAMES: &[&str] = &[
    "port", "ports", "env", "version", "instance", "service", "node", "services", "data_dir",
];

/// The names a file template (`files:`) may use: those of [`NAMES`] and `config`, the
/// instance's configuration values without its secrets.
pub const FILE_NAMES: &[&str] = &[
    "port", "env", "version", "instance", "service", "node", "services", "data_dir", "config",
];

/// What `{{ data_dir }}` renders to: the agent that runs the instance puts its data
/// folder's path there (only it knows where that is).
pub const DATA_DIR_PLACEHOLDER: &str = "${WHARF_DATA_DIR}";

/// The host part of `{{ services.NAME.host }}` and `.url`: the agent puts there where
/// the instance reaches the service addresses of its host (loopback for a process, the
/// bridge's gateway for a container), which only it knows.
pub const HOST_PLACEHOLDER: &str = "${WHARF_HOST_ADDRESS}";

/// What a template sees when it is rendered for one instance.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateContext {
    pub port: Option<u16>,
    /// The instance's other ports by name (`ports:`), for `{{ ports.admin }}`.
    pub ports: BTreeMap<String, u16>,
    pub env: String,
    pub version: String,
    pub instance: u32,
    pub service: String,
    pub node: String,
    /// Address of every service of the environment, for `{{ services.NAME.url }}`.
    pub services: BTreeMap<String, PeerAddress>,
    /// [`DATA_DIR_PLACEHOLDER`].
    pub data_dir: &'static str,
}

/// Where another service of the same environment answers.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PeerAddress {
    pub host: String,
    pub port: Option<u16>,
    pub url: Option<String>,
}

/// A template that does not parse or names something undefined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TemplateError {
    message: String,
    hint: Option<String>,
}

impl TemplateError {
    pub fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // A file's last line ends with its newline, as it was written.
    env.set_keep_trailing_newline(true);
    env
}

/// Renders `text` for one instance.
pub fn render(text: &str, context: &TemplateContext) -> Result<String, TemplateError> {
    render_with(text, context, NAMES)
}

/// What a file template sees: an instance's context and its configuration.
#[derive(Serialize)]
struct FileContext<'a, C: Serialize> {
    #[serde(flatten)]
    context: C,
    config: &'a BTreeMap<String, String>,
}

/// Renders a file template (`files:`) for one instance, whose configuration values
/// (never its secrets) are `config`.
pub fn render_file(
    text: &str,
    context: &TemplateContext,
    config: &BTreeMap<String, String>,
) -> Result<String, TemplateError> {
    render_with(text, FileContext { context, config }, FILE_NAMES)
}

fn render_with(
    text: &str,
    context: impl Serialize,
    names: &[&str],
) -> Result<String, TemplateError> {
    if !text.contains("{{") && !text.contains("{%") {
        return Ok(text.to_owned());
    }
    let env = environment();
    let template = env.template_from_str(text).map_err(syntax_error)?;
    if let Some(unknown) = template
        .undeclared_variables(false)
        .into_iter()
        .find(|v| !names.contains(&v.as_str()))
    {
        return Err(unknown_name(&unknown, names));
    }
    template.render(context).map_err(|e| TemplateError {
        message: format!(
            "{} cannot be rendered: {}",
            shown(text, e.line()),
            e.detail().unwrap_or("undefined value")
        ),
        hint: Some(format!("templates may use {}", names.join(", "))),
    })
}

/// Checks templates without an instance: syntax, names, and `services.X` references.
/// The context of every service is made once, so checking all the templates of a
/// definition takes time linear in their number.
pub struct TemplateCheck<'a> {
    services: &'a [&'a str],
    context: minijinja::Value,
    /// The same, for file templates, which add `config` beside its names.
    fields: TemplateContext,
}

impl<'a> TemplateCheck<'a> {
    pub fn new(services: &'a [&'a str]) -> Self {
        let peers = services
            .iter()
            .map(|s| {
                let address = PeerAddress {
                    host: "127.0.0.1".into(),
                    port: Some(1),
                    url: Some("http://127.0.0.1:1".into()),
                };
                (s.to_string(), address)
            })
            .collect();
        let context = TemplateContext {
            port: Some(1),
            ports: BTreeMap::new(),
            env: "env".into(),
            version: "v".into(),
            instance: 0,
            service: "s".into(),
            node: "n".into(),
            services: peers,
            data_dir: DATA_DIR_PLACEHOLDER,
        };
        Self {
            services,
            context: minijinja::Value::from_serialize(&context),
            fields: context,
        }
    }

    pub fn check(&self, text: &str) -> Result<(), TemplateError> {
        self.explained(text, render_with(text, &self.context, NAMES))
    }

    /// The same check for a service whose other ports are `names`.
    pub fn with_ports(&self, names: &[String]) -> Self {
        let mut fields = self.fields.clone();
        fields.ports = names.iter().map(|n| (n.clone(), 1)).collect();
        Self {
            services: self.services,
            context: minijinja::Value::from_serialize(&fields),
            fields,
        }
    }

    /// Checks a file template, whose `config` holds `config_keys` (every key the
    /// service's configuration has in some environment).
    pub fn check_file(
        &self,
        text: &str,
        config_keys: &std::collections::BTreeSet<String>,
    ) -> Result<(), TemplateError> {
        let config: BTreeMap<String, String> = config_keys
            .iter()
            .map(|k| (k.clone(), "x".into()))
            .collect();
        let context = FileContext {
            context: &self.fields,
            config: &config,
        };
        self.explained(text, render_with(text, context, FILE_NAMES))
    }

    fn explained(
        &self,
        text: &str,
        result: Result<String, TemplateError>,
    ) -> Result<(), TemplateError> {
        result.map(|_| ()).map_err(|e| {
            // `services.X` with an unknown X is the likely mistake; name the valid ones.
            if let Some(rest) = text.split("services.").nth(1) {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                    .collect();
                if !self.services.contains(&name.as_str()) {
                    return TemplateError {
                        message: format!("template refers to unknown service `{name}`"),
                        hint: Some(suggest::hint_for(&name, "service", self.services)),
                    };
                }
            }
            e
        })
    }
}

/// Checks one template; see [`TemplateCheck`] for many.
pub fn check(text: &str, services: &[&str]) -> Result<(), TemplateError> {
    TemplateCheck::new(services).check(text)
}

/// A short template quoted, a long one (a file) by the line at fault.
fn shown(text: &str, line: Option<usize>) -> String {
    if text.len() <= 80 && !text.contains('\n') {
        return format!("template `{text}`");
    }
    match line {
        Some(n) => format!("line {n}"),
        None => "the template".into(),
    }
}

fn syntax_error(e: minijinja::Error) -> TemplateError {
    let at = e.line().map(|n| format!(" (line {n})")).unwrap_or_default();
    TemplateError {
        message: format!(
            "invalid template{at}: {}",
            e.detail().unwrap_or("syntax error")
        ),
        hint: Some("templates look like `{{ port }}`".into()),
    }
}

fn unknown_name(name: &str, names: &[&str]) -> TemplateError {
    TemplateError {
        message: format!("template uses undefined name `{name}`"),
        hint: Some(match suggest::closest(name, names.iter().copied()) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!("templates may use {}", names.join(", ")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> TemplateContext {
        TemplateContext {
            ports: BTreeMap::new(),
            port: Some(8080),
            env: "uat".into(),
            version: "build-7".into(),
            instance: 2,
            service: "catalog".into(),
            node: "web-1".into(),
            services: BTreeMap::new(),
            data_dir: DATA_DIR_PLACEHOLDER,
        }
    }

    #[test]
    fn renders_instance_values() {
        let out = render(
            "{{ service }}@{{ env }}:{{ port }}/{{ version }}#{{ instance }}",
            &context(),
        )
        .unwrap();
        assert_eq!(out, "catalog@uat:8080/build-7#2");
    }

    #[test]
    fn undefined_names_are_errors_with_a_suggestion() {
        let err = render("{{ prot }}", &context()).unwrap_err();
        assert_eq!(err.to_string(), "template uses undefined name `prot`");
        assert_eq!(err.hint().unwrap(), "did you mean `port`?");
    }

    #[test]
    fn unknown_peer_services_are_reported() {
        let err = check("{{ services.catalgo.url }}", &["catalog", "orders"]).unwrap_err();
        assert!(err.to_string().contains("`catalgo`"), "{err}");
        assert_eq!(err.hint().unwrap(), "did you mean `catalog`?");
        assert!(check("{{ services.catalog.url }}/x", &["catalog"]).is_ok());
    }

    #[test]
    fn plain_text_is_untouched() {
        assert_eq!(render("a {b} c", &context()).unwrap(), "a {b} c");
    }
}
