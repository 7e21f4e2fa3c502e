//! Reading a node's attributes by name and type, remembering which were read.

use pare_onnx::proto::{attribute_proto::AttributeType, AttributeProto};

/// Reads attributes by name and remembers which were read, so unknown ones can be detected. An
/// attribute of the wrong type, or a value outside what the spec allows, is an error: such a node
/// is invalid, not merely unmodelled.
pub(super) struct Attrs<'a> {
    list: &'a [AttributeProto],
    used: Vec<bool>,
}

pub(super) type Parsed<T> = Result<T, String>;

impl<'a> Attrs<'a> {
    pub(super) fn new(list: &'a [AttributeProto]) -> Self {
        Attrs {
            list,
            used: vec![false; list.len()],
        }
    }

    pub(super) fn get(
        &mut self,
        name: &str,
        kind: AttributeType,
    ) -> Parsed<Option<&'a AttributeProto>> {
        let Some(i) = self
            .list
            .iter()
            .position(|a| a.name.as_deref() == Some(name))
        else {
            return Ok(None);
        };
        self.used[i] = true;
        let a = &self.list[i];
        match a.r#type {
            Some(t) if t != kind as i32 => Err(format!(
                "attribute '{name}' has type {}, the spec says {}",
                AttributeType::try_from(t).map_or(format!("#{t}"), |t| t.as_str_name().into()),
                kind.as_str_name()
            )),
            _ => Ok(Some(a)),
        }
    }

    pub(super) fn int(&mut self, name: &str, default: i64) -> Parsed<i64> {
        Ok(self
            .get(name, AttributeType::Int)?
            .map_or(default, |a| a.i.unwrap_or(0)))
    }

    pub(super) fn float(&mut self, name: &str, default: f32) -> Parsed<f32> {
        Ok(self
            .get(name, AttributeType::Float)?
            .map_or(default, |a| a.f.unwrap_or(0.0)))
    }

    pub(super) fn opt_float(&mut self, name: &str) -> Parsed<Option<f32>> {
        Ok(self
            .get(name, AttributeType::Float)?
            .map(|a| a.f.unwrap_or(0.0)))
    }

    pub(super) fn ints(&mut self, name: &str) -> Parsed<Option<Vec<i64>>> {
        Ok(self.get(name, AttributeType::Ints)?.map(|a| a.ints.clone()))
    }

    pub(super) fn string(&mut self, name: &str) -> Parsed<Option<String>> {
        Ok(self
            .get(name, AttributeType::String)?
            .map(|a| String::from_utf8_lossy(a.s.as_deref().unwrap_or_default()).into_owned()))
    }

    pub(super) fn all_used(&self) -> bool {
        self.used.iter().all(|&u| u)
    }
}
