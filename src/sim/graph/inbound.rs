//! Inbound traffic: customer messages the simulator makes up and posts to the daemon as
//! signed webhooks — texts in English, Korean and Chinese with emoji, images with captions,
//! documents with file names, replies quoting an earlier message, and a Click-to-WhatsApp
//! referral on the first message of customers who came from an ad.
//!
//! Invariants:
//! - every generated message opens (or refreshes) the customer-service window of its
//!   (number, customer) at its timestamp, whether or not the daemon accepts the webhook:
//!   on Meta the window depends on the customer, not on our webhook endpoint;
//! - customers are stable: index i always has the same phone number, language and name
//!   (the load generator's numbering), and even indices came from an ad;
//! - the generator is open loop at the requested rate with at most [`MAX_IN_FLIGHT`] posts
//!   outstanding; when the target is slower, sends wait (and the report says how many
//!   started late) rather than piling up.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

use super::limits::ENTRY_POINT_MS;
use super::{stopped, unix_ms, Inner, SimError};
use crate::sim::load::{Language, NumberSpec, PayloadConfig, PayloadGen};

/// Inbound posts outstanding at once per generator.
pub const MAX_IN_FLIGHT: usize = 32;
/// How late a scheduled message may start before it counts as late.
const LATE_AFTER: Duration = Duration::from_millis(50);

/// What a generator run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InboundReport {
    pub generated: u64,
    /// Posts the target answered 200 (after retries).
    pub posted_ok: u64,
    pub posted_failed: u64,
    pub texts: u64,
    pub images: u64,
    pub documents: u64,
    pub replies: u64,
    pub referrals: u64,
    /// Messages that started more than 50 ms after their scheduled time.
    pub late: u64,
}

/// Inbound counters over the simulator's life, as [`SimStats`](super::SimStats) shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InboundStats {
    pub generated: u64,
    pub posted_ok: u64,
    pub posted_failed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Image,
    Document,
    Reply,
}

struct Phrases {
    names: &'static [&'static str],
    short: &'static [&'static str],
    captions: &'static [&'static str],
    files: &'static [&'static str],
    headline: &'static str,
}

const ENGLISH: Phrases = Phrases {
    names: &["Emily Carter", "James O'Neil", "Priya Raman", "Lucas Silva"],
    short: &[
        "Hi! Has my order shipped yet? 📦",
        "Thanks, that worked 👍",
        "Can I change the delivery address?",
        "Do you have this in blue? 😊",
        "It arrived damaged 😞 what now?",
    ],
    captions: &["Here is the damaged box 📷", "Is this the right part? 🔧"],
    files: &["invoice-2026-01.pdf", "warranty card.pdf"],
    headline: "Spring sale: 30% off headphones",
};

const KOREAN: Phrases = Phrases {
    names: &["김민준", "이서연", "박지훈", "최유나"],
    short: &[
        "안녕하세요! 주문한 상품 언제 도착하나요? 📦",
        "감사합니다 😊",
        "환불 가능한가요? 🙏",
        "사이즈 교환하고 싶어요 👟",
        "배송지 변경 가능할까요? 🏠",
    ],
    captions: &["파손된 상자 사진입니다 📷", "이 부품이 맞나요? 🔧"],
    files: &["영수증.pdf", "주문내역 2026-01.pdf"],
    headline: "봄맞이 세일: 헤드폰 30% 할인",
};

const CHINESE: Phrases = Phrases {
    names: &["王小明", "李静", "张伟", "陈佳怡"],
    short: &[
        "你好！我的订单什么时候发货？📦",
        "谢谢你们的帮助 🙏",
        "这个有蓝色的吗？😊",
        "可以开发票吗？🧾",
        "收到的东西坏了 😞 怎么办？",
    ],
    captions: &["这是破损包装的照片 📷", "是这个零件吗？🔧"],
    files: &["发票.pdf", "保修卡.pdf"],
    headline: "春季大促：耳机七折",
};

fn phrases(lang: Language) -> &'static Phrases {
    match lang {
        Language::English => &ENGLISH,
        Language::Korean => &KOREAN,
        Language::Chinese => &CHINESE,
    }
}

/// The customer pool: phone numbers and languages as the load generator numbers them.
pub(crate) struct Customers {
    gen: PayloadGen,
}

impl Customers {
    pub fn new() -> Customers {
        let cfg = PayloadConfig {
            numbers: vec![NumberSpec {
                phone_number_id: "1".into(),
                display_phone_number: "1".into(),
            }],
            waba_id: String::new(),
            customers: 1,
            messages_per_post: 1,
            body_bytes: None,
            run_id: String::new(),
        };
        // A constant, valid config (one number, one customer): cannot fail.
        Customers {
            gen: PayloadGen::new(cfg).expect("constant payload config is valid"),
        }
    }

    pub fn wa_id(&self, index: u32) -> String {
        self.gen.wa_id(index)
    }
}

/// One message to post.
struct Message {
    number: usize,
    wa_id: String,
    name: String,
    wamid: String,
    timestamp: i64,
    kind: Kind,
    content: Value,
    context: Option<(String, String)>,
    referral: Option<Value>,
}

impl Inner {
    fn body_of(&self, m: &Message) -> Option<String> {
        let hooks = self.webhooks.as_ref()?;
        let mut msg = json!({
            "from": m.wa_id,
            "id": m.wamid,
            "timestamp": m.timestamp.to_string(),
        });
        let type_name = match m.kind {
            Kind::Text | Kind::Reply => "text",
            Kind::Image => "image",
            Kind::Document => "document",
        };
        msg["type"] = json!(type_name);
        msg[type_name] = m.content.clone();
        if let Some((from, id)) = &m.context {
            msg["context"] = json!({"from": from, "id": id});
        }
        if let Some(r) = &m.referral {
            msg["referral"] = r.clone();
        }
        let change = json!({
            "value": {
                "messaging_product": "whatsapp",
                "metadata": hooks.metadata(m.number),
                "contacts": [{"profile": {"name": m.name}, "wa_id": m.wa_id}],
                "messages": [msg],
            },
            "field": "messages",
        });
        Some(hooks.envelope(vec![change]))
    }

    fn next_inbound_wamid(&self) -> String {
        let seq = self.inbound.seq.fetch_add(1, Ordering::Relaxed);
        format!("wamid.SIMIN.{}.{seq}", self.run_id)
    }

    /// Makes up the next generated message and records its window.
    fn make_message(&self, customers: u32) -> Message {
        let now_ms = unix_ms();
        let wamid = self.next_inbound_wamid();
        let mut st = self.state.lock();
        let number = st.rng.below(self.numbers.len() as u64) as usize;
        let index = st.rng.below(u64::from(customers)) as u32;
        let wa_id = self.customers.wa_id(index);
        let lang = PayloadGen::language(index);
        let p = phrases(lang);
        let name = p.names[(index as usize / 3) % p.names.len()].to_owned();
        let roll = st.rng.unit();
        let pick = |rng: &mut super::Rng, list: &[&'static str]| {
            list[rng.below(list.len() as u64) as usize].to_owned()
        };
        let (first, earlier) = match st.windows.get(number, &wa_id) {
            None => (true, None),
            Some(w) => (
                w.last_inbound_wamid.is_none(),
                w.last_outbound_wamid
                    .clone()
                    .map(|id| (self.numbers[number].display_phone_number.clone(), id))
                    .or_else(|| w.last_inbound_wamid.clone().map(|id| (wa_id.clone(), id))),
            ),
        };
        let kind = match (roll, &earlier) {
            (r, Some(_)) if r < 0.15 => Kind::Reply,
            (r, _) if r < 0.27 => Kind::Image,
            (r, _) if r < 0.35 => Kind::Document,
            _ => Kind::Text,
        };
        let mut hash = || format!("{:016x}{:016x}", st.rng.next_u64(), st.rng.next_u64());
        let sha = hash();
        let media_id = st.rng.next_u64() % 10_000_000_000_000_000;
        let content = match kind {
            Kind::Text | Kind::Reply => {
                // One in four texts is a long support message from the load generator's book.
                let body = if st.rng.unit() < 0.25 {
                    pick(&mut st.rng, lang.texts())
                } else {
                    pick(&mut st.rng, p.short)
                };
                json!({ "body": body })
            }
            Kind::Image => json!({
                "caption": pick(&mut st.rng, p.captions),
                "mime_type": "image/jpeg",
                "sha256": sha,
                "id": media_id.to_string(),
            }),
            Kind::Document => json!({
                "filename": pick(&mut st.rng, p.files),
                "mime_type": "application/pdf",
                "sha256": sha,
                "id": media_id.to_string(),
            }),
        };
        let from_ad = first && index % 2 == 0;
        let referral = from_ad.then(|| {
            let clid = st.rng.next_u64();
            json!({
                "source_url": format!("https://fb.me/sim{index}"),
                "source_id": format!("1202{:012}", index),
                "source_type": "ad",
                "headline": p.headline,
                "body": p.short[0],
                "media_type": "image",
                "image_url": "https://scontent.example/ad.jpg",
                "ctwa_clid": format!("ARA{clid:016x}"),
            })
        });
        let window = st.windows.entry(number, &wa_id, now_ms);
        window.last_inbound_ms = Some(now_ms);
        window.last_inbound_wamid = Some(wamid.clone());
        if from_ad {
            window.entry_point_until_ms = Some(now_ms + ENTRY_POINT_MS);
        }
        Message {
            number,
            wa_id,
            name,
            wamid,
            timestamp: now_ms / 1000,
            kind,
            content,
            context: if kind == Kind::Reply { earlier } else { None },
            referral,
        }
    }

    async fn post_counted(&self, body: String) -> Result<(), SimError> {
        let hooks = self.webhooks.as_ref().ok_or(SimError::NoWebhookTarget)?;
        self.inbound.generated.fetch_add(1, Ordering::Relaxed);
        let result = hooks.post(body, self.stop.clone()).await;
        let counter = if result.is_ok() {
            &self.inbound.posted_ok
        } else {
            &self.inbound.posted_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    /// One text from `customer` to `number` now; returns its wamid once the target answered
    /// 200.
    pub(crate) async fn send_inbound(
        &self,
        number: &str,
        customer: &str,
        text: &str,
    ) -> Result<String, SimError> {
        if self.webhooks.is_none() {
            return Err(SimError::NoWebhookTarget);
        }
        let slot = self.slot(number)?;
        let wa_id = super::customer_key(customer)?;
        let now_ms = unix_ms();
        let wamid = self.next_inbound_wamid();
        {
            let mut st = self.state.lock();
            let w = st.windows.entry(slot, &wa_id, now_ms);
            w.last_inbound_ms = Some(now_ms);
            w.last_inbound_wamid = Some(wamid.clone());
        }
        let m = Message {
            number: slot,
            wa_id: wa_id.clone(),
            name: format!("Customer {wa_id}"),
            wamid: wamid.clone(),
            timestamp: now_ms / 1000,
            kind: Kind::Text,
            content: json!({ "body": text }),
            context: None,
            referral: None,
        };
        let body = self.body_of(&m).ok_or(SimError::NoWebhookTarget)?;
        self.post_counted(body).await?;
        Ok(wamid)
    }
}

/// Posts generated messages at `rate` per second for `duration` from `customers` customers
/// spread over every number; ends early at shutdown.
pub(crate) async fn generate(
    inner: Arc<Inner>,
    rate: f64,
    duration: Duration,
    customers: u32,
) -> Result<InboundReport, SimError> {
    if inner.webhooks.is_none() {
        return Err(SimError::NoWebhookTarget);
    }
    if !(rate.is_finite() && rate > 0.0) || customers == 0 || inner.numbers.is_empty() {
        return Err(SimError::Config(
            "inbound generation needs a positive rate, at least one customer and one number".into(),
        ));
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let end = start + duration;
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut report = InboundReport::default();
    let mut posts: JoinSet<bool> = JoinSet::new();
    let mut k: u32 = 0;
    loop {
        let at = start + interval * k;
        if at >= end {
            break;
        }
        k = k.saturating_add(1);
        let permit = tokio::select! {
            biased;
            _ = stopped(inner.stop.clone()) => break,
            _ = sleep_until(at) => match permits.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        if Instant::now() > at + LATE_AFTER {
            report.late += 1;
        }
        let m = inner.make_message(customers);
        report.generated += 1;
        match m.kind {
            Kind::Text => report.texts += 1,
            Kind::Image => report.images += 1,
            Kind::Document => report.documents += 1,
            Kind::Reply => report.replies += 1,
        }
        report.referrals += u64::from(m.referral.is_some());
        let Some(body) = inner.body_of(&m) else {
            break;
        };
        let inner = inner.clone();
        posts.spawn(async move {
            let ok = inner.post_counted(body).await.is_ok();
            drop(permit);
            ok
        });
        while let Some(done) = posts.try_join_next() {
            tally(&mut report, done);
        }
    }
    while let Some(done) = posts.join_next().await {
        tally(&mut report, done);
    }
    Ok(report)
}

fn tally(report: &mut InboundReport, done: Result<bool, tokio::task::JoinError>) {
    match done {
        Ok(true) => report.posted_ok += 1,
        _ => report.posted_failed += 1,
    }
}
