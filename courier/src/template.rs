//! Message content: per campaign and language templates rendered with
//! minijinja from the trigger's fields.

use crate::config::{Config, ConfigError};
use crate::model::{Item, Trigger};
use minijinja::Environment;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rendered {
    pub language: String,
    pub title: String,
    pub subject: String,
    pub body: String,
    pub deep_link: String,
}

/// All compiled templates.
pub struct Templates {
    env: Environment<'static>,
    /// campaign -> languages with templates
    languages: BTreeMap<String, BTreeSet<String>>,
    has_subject: BTreeSet<(String, String)>,
    has_link: BTreeSet<String>,
    fallback: String,
}

/// What a template sees. A field the record lacks is left out, so that it
/// is undefined in the template (renders empty, tests false) rather than
/// `none`.
#[derive(Serialize)]
struct Ctx<'a> {
    trigger_id: &'a str,
    campaign: &'a str,
    kind: &'a str,
    user_id: &'a str,
    ts: i64,
    items: &'a [Item],
    /// The first item, if any (shortcut for templates).
    #[serde(skip_serializing_if = "Option::is_none")]
    item: Option<&'a Item>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    category_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audience: Option<&'a str>,
    reminder: bool,
    language: &'a str,
}

/// A template failed to render.
#[derive(Debug, thiserror::Error)]
#[error("template {name}: {message}")]
pub struct RenderError {
    pub name: String,
    pub message: String,
}

fn name(campaign: &str, lang: &str, field: &str) -> String {
    format!("campaigns.{campaign}.templates.{lang}.{field}")
}

impl Templates {
    /// Compiles every template of the configuration; a syntax error names
    /// the field.
    pub fn new(cfg: &Config) -> Result<Templates, ConfigError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        let mut languages = BTreeMap::new();
        let mut has_subject = BTreeSet::new();
        let mut has_link = BTreeSet::new();
        let mut add = |n: String, src: &str| {
            env.add_template_owned(n.clone(), src.to_owned())
                .map_err(|e| ConfigError::Field {
                    field: n,
                    message: format!("template does not compile: {e}"),
                })
        };
        for (c, cc) in &cfg.campaigns {
            if let Some(l) = &cc.deep_link {
                add(format!("campaigns.{c}.deep_link"), l)?;
                has_link.insert(c.clone());
            }
            let mut langs = BTreeSet::new();
            for (lang, t) in &cc.templates {
                add(name(c, lang, "title"), &t.title)?;
                add(name(c, lang, "body"), &t.body)?;
                if let Some(s) = &t.subject {
                    add(name(c, lang, "subject"), s)?;
                    has_subject.insert((c.clone(), lang.clone()));
                }
                langs.insert(lang.clone());
            }
            languages.insert(c.clone(), langs);
        }
        Ok(Templates {
            env,
            languages,
            has_subject,
            has_link,
            fallback: cfg.defaults.fallback_language.clone(),
        })
    }

    /// The language used for a campaign given the user's language.
    pub fn language_for<'a>(&'a self, campaign: &str, wanted: Option<&'a str>) -> &'a str {
        if let (Some(w), Some(langs)) = (wanted, self.languages.get(campaign)) {
            if langs.contains(w) {
                return w;
            }
        }
        &self.fallback
    }

    fn render_one<S: Serialize>(&self, n: &str, ctx: S) -> Result<String, RenderError> {
        let t = self.env.get_template(n).map_err(|e| RenderError {
            name: n.to_string(),
            message: e.to_string(),
        })?;
        t.render(ctx).map_err(|e| RenderError {
            name: n.to_string(),
            message: e.to_string(),
        })
    }

    /// Renders the campaign's message for a trigger in the best language.
    pub fn render(
        &self,
        t: &Trigger,
        wanted_language: Option<&str>,
    ) -> Result<Rendered, RenderError> {
        let lang = self.language_for(&t.campaign, wanted_language).to_string();
        let ctx = Ctx {
            trigger_id: &t.trigger_id,
            campaign: &t.campaign,
            kind: &t.kind,
            user_id: &t.user_id,
            ts: t.ts,
            items: &t.items,
            item: t.items.first(),
            query: t.query.as_deref(),
            category_id: t.category_id.as_deref(),
            order_id: t.order_id.as_deref(),
            audience: t.audience.as_deref(),
            reminder: t.reminder.unwrap_or(false),
            language: &lang,
        };
        // Serialised once, shared by every template of the message.
        let base = minijinja::Value::from_serialize(&ctx);
        let link = if self.has_link.contains(&t.campaign) {
            self.render_one(&format!("campaigns.{}.deep_link", t.campaign), &base)?
        } else {
            t.items
                .iter()
                .find_map(|i| i.url.clone())
                .unwrap_or_default()
        };
        let ctx = minijinja::context! { deep_link => &link, ..base };
        let title = self.render_one(&name(&t.campaign, &lang, "title"), &ctx)?;
        let body = self.render_one(&name(&t.campaign, &lang, "body"), &ctx)?;
        let subject = if self
            .has_subject
            .contains(&(t.campaign.clone(), lang.clone()))
        {
            self.render_one(&name(&t.campaign, &lang, "subject"), &ctx)?
        } else {
            title.clone()
        };
        Ok(Rendered {
            language: lang.clone(),
            title,
            subject,
            body,
            deep_link: link,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = r#"
[defaults]
fallback_language = "en"
channels = ["webhook"]
[channels.webhook]
url = "http://127.0.0.1:9/hook"
allow_http = true
secret = "k"
[campaigns.drop]
deep_link = "https://shop.example/p/{{ item.product_id }}?utm_campaign={{ campaign }}"
[campaigns.drop.templates.en]
title = "{{ item.title }} is cheaper"
body = "Now {{ item.price }} AZN instead of {{ item.old_price }} AZN: {{ deep_link }}"
[campaigns.drop.templates.az]
title = "{{ item.title }} ucuzlaşdı"
body = "İndi {{ item.price }} AZN ({{ item.old_price }} AZN əvəzinə)"
subject = "Endirim: {{ item.title }}"
[campaigns.drop.templates.ru]
title = "{{ item.title }} подешевел"
body = "Теперь {{ item.price }} AZN вместо {{ item.old_price }} AZN"
[campaigns.search]
[campaigns.search.templates.en]
title = "Still looking for {{ query }}?"
body = "{% for i in items %}{{ i.title }}{% if not loop.last %}, {% endif %}{% endfor %}"
"#;

    fn trig(campaign: &str) -> Trigger {
        serde_json::from_value(serde_json::json!({
            "trigger_id": "t", "campaign": campaign, "kind": "price_drop", "user_id": "u",
            "ts": 1, "query": "red shoes",
            "items": [{"product_id": "p1", "title": "Kettle", "price": 19.5, "old_price": 25}, {"product_id": "p2", "title": "Cup"}]
        }))
        .unwrap()
    }

    #[test]
    fn renders_per_language_with_fallback() {
        let cfg = Config::from_toml(CFG).unwrap();
        let t = Templates::new(&cfg).unwrap();
        let en = t.render(&trig("drop"), Some("en")).unwrap();
        assert_eq!(en.title, "Kettle is cheaper");
        assert_eq!(en.deep_link, "https://shop.example/p/p1?utm_campaign=drop");
        assert_eq!(
            en.body,
            "Now 19.5 AZN instead of 25.0 AZN: https://shop.example/p/p1?utm_campaign=drop"
        );
        assert_eq!(en.subject, en.title);
        let az = t.render(&trig("drop"), Some("az")).unwrap();
        assert_eq!(az.language, "az");
        assert_eq!(az.subject, "Endirim: Kettle");
        let ru = t.render(&trig("drop"), Some("ru")).unwrap();
        assert!(ru.title.contains("подешевел"));
        let fr = t.render(&trig("drop"), Some("fr")).unwrap();
        assert_eq!(fr.language, "en");
        let s = t.render(&trig("search"), Some("az")).unwrap();
        assert_eq!(s.title, "Still looking for red shoes?");
        assert_eq!(s.body, "Kettle, Cup");
    }

    /// A field the record lacks renders empty and tests false, never `none`.
    #[test]
    fn missing_fields_render_empty() {
        let cfg = Config::from_toml(CFG).unwrap();
        let t = Templates::new(&cfg).unwrap();
        let mut search = trig("search");
        search.query = None;
        search.items.clear();
        let s = t.render(&search, Some("en")).unwrap();
        assert_eq!(s.title, "Still looking for ?");
        // An attribute of a missing item is empty too.
        let mut drop = trig("drop");
        drop.items.clear();
        let d = t.render(&drop, Some("en")).unwrap();
        assert_eq!(d.title, " is cheaper");
        assert_eq!(s.body, "");
    }

    #[test]
    fn bad_template_names_the_field() {
        let bad = CFG.replace("{{ query }}?", "{{ query ");
        let err = Config::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains("campaigns.search.templates.en.title"), "{err}");
    }
}
