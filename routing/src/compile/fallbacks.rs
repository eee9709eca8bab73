//! Fallback chains: dropping unknown aliases, reporting cycles, flattening.

use std::collections::{BTreeMap, BTreeSet};

use crate::diag::{Condition, Diagnostic, reason};
use crate::table::ObjectRef;

/// A route that made it into the table, with its fallbacks as listed
/// (index in `spec.fallbacks`, alias).
pub(super) struct Served<'a> {
    pub object: &'a ObjectRef,
    pub listed: &'a [(usize, String)],
}

/// Resolves every served route's fallbacks against the served aliases.
///
/// `unserved` maps aliases that some route claims but that are not in the
/// table to that route, for a more helpful message. Returns each served
/// alias's flattened chain: depth-first in listed order, de-duplicated,
/// without the alias itself, only served aliases.
pub(super) fn resolve(
    served: &BTreeMap<String, Served<'_>>,
    unserved: &BTreeMap<String, ObjectRef>,
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Vec<String>> {
    let mut direct: BTreeMap<&str, Vec<(usize, &str)>> = BTreeMap::new();
    for (alias, route) in served {
        let mut edges: Vec<(usize, &str)> = Vec::new();
        for (index, fallback) in route.listed {
            let field = format!("spec.fallbacks[{index}]");
            if fallback == alias {
                diagnostics.push(error(
                    route.object,
                    reason::FALLBACK_CYCLE,
                    &field,
                    format!("`{field}` names the route's own alias `{alias}`; it is ignored, remove it"),
                ));
            } else if served.contains_key(fallback) {
                if !edges.iter().any(|(_, seen)| seen == fallback) {
                    edges.push((*index, fallback));
                }
            } else {
                let message = match unserved.get(fallback) {
                    Some(owner) => format!(
                        "`{field}` names alias `{fallback}`, which is not in the table because {} has errors; \
                         it is left out of the fallback chain until that route is fixed",
                        super::named(owner)
                    ),
                    None => format!(
                        "`{field}` names alias `{fallback}`, which no ModelRoute serves; \
                         it is left out of the fallback chain, check the spelling or create the route"
                    ),
                };
                diagnostics.push(error(route.object, reason::FALLBACK_NOT_FOUND, &field, message));
            }
        }
        direct.insert(alias, edges);
    }

    for (alias, route) in served {
        if let Some((index, path)) = cycle_through(alias, &direct) {
            let field = format!("spec.fallbacks[{index}]");
            let shown: Vec<String> = path.iter().map(|a| format!("`{a}`")).collect();
            diagnostics.push(error(
                route.object,
                reason::FALLBACK_CYCLE,
                &field,
                format!(
                    "`{field}` leads back to this route: {}; the fallback chain stops before repeating an alias, \
                     remove one of these fallbacks to break the cycle",
                    shown.join(" → ")
                ),
            ));
        }
    }

    served
        .keys()
        .map(|alias| {
            let mut visited = BTreeSet::from([alias.as_str()]);
            let mut chain = Vec::new();
            flatten(alias, &direct, &mut visited, &mut chain);
            (alias.clone(), chain)
        })
        .collect()
}

fn flatten<'a>(
    alias: &str,
    direct: &BTreeMap<&'a str, Vec<(usize, &'a str)>>,
    visited: &mut BTreeSet<&'a str>,
    chain: &mut Vec<String>,
) {
    for (_, next) in direct.get(alias).map(Vec::as_slice).unwrap_or_default() {
        if visited.insert(next) {
            chain.push((*next).to_owned());
            flatten(next, direct, visited, chain);
        }
    }
}

/// The first cycle back to `start`, depth-first in listed order: the index
/// of the first edge in `start`'s `spec.fallbacks` and the aliases along the
/// way, `start` at both ends.
fn cycle_through<'a>(
    start: &'a str,
    direct: &BTreeMap<&'a str, Vec<(usize, &'a str)>>,
) -> Option<(usize, Vec<&'a str>)> {
    fn search<'a>(
        node: &'a str,
        start: &'a str,
        direct: &BTreeMap<&'a str, Vec<(usize, &'a str)>>,
        visited: &mut BTreeSet<&'a str>,
        path: &mut Vec<&'a str>,
    ) -> bool {
        for (_, next) in direct.get(node).map(Vec::as_slice).unwrap_or_default() {
            if *next == start {
                path.push(start);
                return true;
            }
            if visited.insert(next) {
                path.push(next);
                if search(next, start, direct, visited, path) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }

    for (index, first) in direct.get(start).map(Vec::as_slice).unwrap_or_default() {
        let mut visited = BTreeSet::from([start, *first]);
        let mut path = vec![start, *first];
        if search(first, start, direct, &mut visited, &mut path) {
            return Some((*index, path));
        }
    }
    None
}

fn error(object: &ObjectRef, reason: &str, field: &str, message: String) -> Diagnostic {
    Diagnostic::error(object, Condition::ResolvedRefs, reason, field, message)
}
