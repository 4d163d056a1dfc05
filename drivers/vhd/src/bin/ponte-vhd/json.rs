//! A minimal JSON object writer for `info --json`.

/// Builds one JSON object, member by member, in insertion order.
#[derive(Default)]
pub struct Object {
    members: Vec<(String, String)>,
}

/// A JSON string literal for `s`.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Object {
    /// Adds a member whose value is already JSON text.
    pub fn raw(&mut self, name: &str, json: String) -> &mut Self {
        self.members.push((name.to_string(), json));
        self
    }
    /// Adds a string member.
    pub fn str(&mut self, name: &str, value: &str) -> &mut Self {
        self.raw(name, string(value))
    }
    /// Adds a number member.
    pub fn num(&mut self, name: &str, value: u64) -> &mut Self {
        self.raw(name, value.to_string())
    }
    /// Adds a boolean member.
    pub fn bool(&mut self, name: &str, value: bool) -> &mut Self {
        self.raw(name, value.to_string())
    }
    /// Adds a string member, or `null`.
    pub fn opt_str(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        self.raw(name, value.map_or("null".to_string(), string))
    }
    /// Adds a number member, or `null`.
    pub fn opt_num(&mut self, name: &str, value: Option<u64>) -> &mut Self {
        self.raw(name, value.map_or("null".to_string(), |v| v.to_string()))
    }
    /// The object as JSON text on one line.
    pub fn render_inline(&self) -> String {
        let body: Vec<String> = self
            .members
            .iter()
            .map(|(k, v)| format!("{}: {v}", string(k)))
            .collect();
        format!("{{ {} }}", body.join(", "))
    }
    /// The object as JSON text, members indented by `indent` spaces.
    pub fn render(&self, indent: usize) -> String {
        let pad = " ".repeat(indent + 2);
        let body: Vec<String> = self
            .members
            .iter()
            .map(|(k, v)| format!("{pad}{}: {v}", string(k)))
            .collect();
        format!("{{\n{}\n{}}}", body.join(",\n"), " ".repeat(indent))
    }
}

/// A JSON array of already rendered values.
pub fn array(items: &[String], indent: usize) -> String {
    if items.is_empty() {
        return "[]".to_string();
    }
    let pad = " ".repeat(indent + 2);
    let body: Vec<String> = items.iter().map(|i| format!("{pad}{i}")).collect();
    format!("[\n{}\n{}]", body.join(",\n"), " ".repeat(indent))
}
