//! Which agent versions a controller works with: the same major version, and a minor
//! version equal to the controller's or one behind it (patch versions never matter).
//! An agent newer than its controller is refused too: upgrade the controller first,
//! then the agents (`wharf host upgrade`).

/// A `MAJOR.MINOR.PATCH` version's major and minor parts.
fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether a controller at `controller` works with an agent at `agent`; why not.
pub fn agent_supported(controller: &str, agent: &str) -> Result<(), String> {
    let (Some((cmaj, cmin)), Some((amaj, amin))) = (major_minor(controller), major_minor(agent))
    else {
        return Err(format!(
            "the agent's version `{agent}` is not MAJOR.MINOR.PATCH (the controller is {controller})"
        ));
    };
    let supported = format!(
        "this controller ({controller}) works with agents {cmaj}.{cmin}.x{}",
        if cmin > 0 {
            format!(" and {cmaj}.{}.x", cmin - 1)
        } else {
            String::new()
        }
    );
    if amaj != cmaj || amin > cmin || cmin - amin > 1 {
        let fix = if (amaj, amin) > (cmaj, cmin) {
            "upgrade the controller first, then the agents"
        } else {
            "upgrade the agent (`wharf host upgrade`)"
        };
        return Err(format!(
            "agent {agent} is not supported: {supported}; {fix}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::agent_supported;

    #[test]
    fn agents_one_minor_version_behind_or_level_are_supported() {
        let table = [
            ("1.4.2", "1.4.0", true),
            ("1.4.0", "1.4.9", true),
            ("1.4.0", "1.3.7", true),
            ("1.4.0", "1.2.0", false),
            ("1.4.0", "1.5.0", false),
            ("2.0.0", "1.9.0", false),
            ("0.1.0", "0.0.9", true),
            ("1.4.0", "latest", false),
        ];
        for (controller, agent, ok) in table {
            assert_eq!(
                agent_supported(controller, agent).is_ok(),
                ok,
                "{controller} with {agent}"
            );
        }
        let err = agent_supported("1.4.0", "1.2.0").unwrap_err();
        assert!(err.contains("works with agents 1.4.x and 1.3.x"), "{err}");
        assert!(
            agent_supported("1.4.0", "1.5.0")
                .unwrap_err()
                .contains("upgrade the controller first")
        );
    }
}
