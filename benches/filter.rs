//! Sensitive-word filter: messages checked per second against a 1,000-term
//! list (English, Korean and Chinese terms: the words compliance lists and
//! two-word combinations of them), for clean and for matching ~200-character
//! messages; and the cost of compiling such a list (what a reload pays).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchboard::outbound::filter::Filter;

const EN: &[&str] = &[
    "free",
    "winner",
    "prize",
    "cash",
    "bonus",
    "loan",
    "credit",
    "casino",
    "jackpot",
    "lottery",
    "crypto",
    "bitcoin",
    "guaranteed",
    "urgent",
    "exclusive",
    "discount",
    "gift",
    "reward",
    "claim",
    "refund",
    "viagra",
    "pills",
    "diet",
    "earn",
    "money",
    "income",
    "profit",
    "double",
    "risk",
    "limited",
    "cheap",
    "subscribe",
    "password",
    "verify",
    "wire",
    "fee",
    "trial",
    "miracle",
    "cure",
    "debt",
    "mortgage",
    "dating",
    "adult",
    "gamble",
    "forex",
    "betting",
];
const KO: &[&str] = &[
    "무료",
    "당첨",
    "대출",
    "경품",
    "현금",
    "카지노",
    "도박",
    "투자",
    "수익",
    "보장",
    "급전",
    "사채",
    "코인",
    "비트코인",
    "주식",
    "리딩방",
    "환급",
    "쿠폰",
    "상품권",
    "성인",
    "만남",
    "입금",
    "계좌",
    "인증",
    "비밀번호",
    "대박",
    "특가",
    "한정",
    "무이자",
    "신용",
    "토토",
    "바카라",
    "슬롯",
    "배팅",
    "복권",
    "부업",
    "고수익",
    "적금",
    "선물",
    "혜택",
    "광고",
];
const ZH: &[&str] = &[
    "免费",
    "中奖",
    "贷款",
    "优惠",
    "折扣",
    "现金",
    "赌场",
    "博彩",
    "投资",
    "收益",
    "保证",
    "比特币",
    "股票",
    "返现",
    "红包",
    "礼品",
    "积分",
    "广告",
    "成人",
    "交友",
    "点击",
    "汇款",
    "账户",
    "验证",
    "密码",
    "特价",
    "限时",
    "无息",
    "信用",
    "彩票",
    "赚钱",
    "兼职",
    "刷单",
    "代购",
    "发票",
    "抽奖",
    "奖金",
    "套现",
    "网贷",
    "荐股",
];

/// 1,000 distinct terms: every single word, then two-word combinations
/// (spaced in English, joined in Korean and Chinese): each word with the one
/// `d` places after it, for d = 1, 2, ... (every (i, d) pair is distinct).
fn terms() -> Vec<String> {
    let mut out: Vec<String> = EN
        .iter()
        .chain(KO)
        .chain(ZH)
        .map(|s| s.to_string())
        .collect();
    let mut d = 1usize;
    while out.len() < 1000 {
        for (words, sep) in [(EN, " "), (KO, ""), (ZH, "")] {
            if d >= words.len() {
                continue;
            }
            for (i, a) in words.iter().enumerate() {
                let t = format!("{a}{sep}{}", words[(i + d) % words.len()]);
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        d += 1;
    }
    out.truncate(1000);
    out
}

const CLEAN_EN: &str = "Hello Maria, thanks for your order #48213. Your parcel left our \
    warehouse this morning and should arrive on Thursday between 9:00 and 13:00. Reply to \
    this chat if you need to change the address.";
const CLEAN_KO: &str =
    "안녕하세요 김민지 고객님, 주문해 주셔서 감사합니다. 고객님의 소포는 오늘 아침 \
    물류센터에서 출발했으며 목요일 오전 9시에서 오후 1시 사이에 도착할 예정입니다. 배송지를 \
    변경하시려면 이 대화창에 답장해 주세요. 다른 문의 사항이 있으시면 언제든지 연락 주십시오. \
    좋은 하루 보내세요.";
const CLEAN_ZH: &str =
    "您好，王先生，感谢您的订单。您的包裹今天上午已从我们的仓库发出，预计将在星期四\
    上午九点至下午一点之间送达。如需更改收货地址，请直接在此对话中回复我们。如果您还有其他问题，\
    欢迎随时联系我们的客服团队，我们会尽快为您处理。祝您生活愉快，再次感谢您的支持与信任。\
    我们期待再次为您服务，谢谢。";
const MATCH_EN: &str = "Hello Maria, thanks for your order #48213. Your parcel left our \
    warehouse this morning and should arrive on Thursday. As a thank-you, your next delivery \
    is F R E E of charge, reply to this chat to book it.";
const MATCH_KO: &str =
    "안녕하세요 김민지 고객님, 주문해 주셔서 감사합니다. 고객님의 소포는 오늘 아침 \
    물류센터에서 출발했으며 목요일 오전 9시에서 오후 1시 사이에 도착할 예정입니다. 감사의 뜻으로 \
    다음 배송은 ㅁ ㅜ ㄹ ㅛ 로 해 드립니다. 이 대화창에 답장해 주세요. 좋은 하루 보내세요.";

fn check(c: &mut Criterion) {
    let terms = terms();
    let filter = Filter::from_terms(&terms).expect("terms compile");
    assert_eq!(filter.len(), 1000);
    let cases = [
        ("clean_en", CLEAN_EN, false),
        ("clean_ko", CLEAN_KO, false),
        ("clean_zh", CLEAN_ZH, false),
        ("match_en_spaced", MATCH_EN, true),
        ("match_ko_jamo", MATCH_KO, true),
    ];
    let mut group = c.benchmark_group("filter_check_1000_terms");
    group.throughput(Throughput::Elements(1));
    for (name, text, matches) in cases {
        assert_eq!(
            filter.check(text).is_some(),
            matches,
            "{name}: {:?}",
            filter.check(text)
        );
        group.bench_function(format!("{name}_{}chars", text.chars().count()), |b| {
            b.iter(|| filter.check(black_box(text)))
        });
    }
    group.finish();

    c.bench_function("filter_compile_1000_terms", |b| {
        b.iter(|| Filter::from_terms(black_box(&terms)).expect("terms compile"))
    });
}

criterion_group!(benches, check);
criterion_main!(benches);
