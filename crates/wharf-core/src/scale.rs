//! `wharf scale`: a service's instance count in one environment, set on a parsed
//! definition (the controller keeps it with the revision, as `kubectl scale` keeps
//! `replicas` on the object, until the next change of wharf.yaml is applied).

use crate::model::Definition;

/// The most instances `wharf scale` sets in one environment.
pub const MAX_SCALE: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScaleError {
    #[error("a service scales to 1..={MAX_SCALE} instances, not {0}")]
    OutOfRange(u32),
    #[error("there is no environment `{0}`")]
    NoEnvironment(String),
    #[error("`{service}` does not run in `{env}`")]
    NotInEnvironment { service: String, env: String },
    #[error(
        "`{service}` runs on {nodes} nodes of `{env}`; which one's count would change is not clear"
    )]
    OnSeveralNodes {
        service: String,
        env: String,
        nodes: usize,
    },
}

impl ScaleError {
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::OutOfRange(0) => Some("`wharf stop SERVICE --env ENV` stops every instance".into()),
            Self::OnSeveralNodes { .. } => Some(
                "set `instances` per node in wharf.yaml, or make the service a pool (`pools: { SERVICE: { count } }`)".into(),
            ),
            _ => None,
        }
    }
}

/// Sets how many instances of `service` run in `env`: a pool's `count`, or the
/// instances of the one node that runs it.
pub fn scale(def: &mut Definition, env: &str, service: &str, count: u32) -> Result<(), ScaleError> {
    if count == 0 || count > MAX_SCALE {
        return Err(ScaleError::OutOfRange(count));
    }
    let environment = def
        .environments
        .get_mut(env)
        .ok_or_else(|| ScaleError::NoEnvironment(env.to_owned()))?;
    if let Some(pool) = environment.pools.get_mut(service) {
        pool.count = count;
        return Ok(());
    }
    let mut placements: Vec<&mut (String, u32)> = environment
        .nodes
        .iter_mut()
        .flat_map(|n| n.services.iter_mut())
        .filter(|(name, _)| name == service)
        .collect();
    match placements.as_mut_slice() {
        [] => Err(ScaleError::NotInEnvironment {
            service: service.to_owned(),
            env: env.to_owned(),
        }),
        [one] => {
            one.1 = count;
            Ok(())
        }
        several => Err(ScaleError::OnSeveralNodes {
            service: service.to_owned(),
            env: env.to_owned(),
            nodes: several.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(environments: &str) -> Definition {
        let text = format!(
            "services:\n  web: {{ build: ., run: [x] }}\n  api: {{ build: ., run: [x] }}\nenvironments:\n{environments}"
        );
        crate::load(&text, "wharf.yaml", &Everywhere).unwrap()
    }

    struct Everywhere;
    impl crate::definition::FolderCheck for Everywhere {
        fn is_folder(&self, _: &str) -> bool {
            true
        }
    }

    fn instances(def: &Definition, env: &str, service: &str) -> u32 {
        let spec = def.deploy_spec(service, env).unwrap();
        spec.slots.len() as u32
    }

    #[test]
    fn the_one_node_of_a_service_gets_the_count() {
        let mut def = definition("  local: {}\n");
        scale(&mut def, "local", "web", 3).unwrap();
        assert_eq!(instances(&def, "local", "web"), 3);
        assert_eq!(
            instances(&def, "local", "api"),
            1,
            "the others are left alone"
        );
    }

    #[test]
    fn a_pool_gets_the_count() {
        let mut def = definition("  prod:\n    pools: { web: { count: 2 } }\n");
        scale(&mut def, "prod", "web", 5).unwrap();
        assert_eq!(def.environments["prod"].pools["web"].count, 5);
    }

    #[test]
    fn what_cannot_be_scaled_says_why() {
        let mut def = definition(
            "  local: {}\n  two:\n    nodes:\n      - { name: a, services: [web] }\n      - { name: b, services: [web] }\n",
        );
        let before = def.clone();
        for (env, service, count, wanted) in [
            ("local", "web", 0, ScaleError::OutOfRange(0)),
            (
                "local",
                "web",
                MAX_SCALE + 1,
                ScaleError::OutOfRange(MAX_SCALE + 1),
            ),
            ("nope", "web", 2, ScaleError::NoEnvironment("nope".into())),
            (
                "two",
                "api",
                2,
                ScaleError::NotInEnvironment {
                    service: "api".into(),
                    env: "two".into(),
                },
            ),
            (
                "two",
                "web",
                2,
                ScaleError::OnSeveralNodes {
                    service: "web".into(),
                    env: "two".into(),
                    nodes: 2,
                },
            ),
        ] {
            assert_eq!(scale(&mut def, env, service, count), Err(wanted));
        }
        assert_eq!(def, before, "a refused scale changes nothing");
    }
}
