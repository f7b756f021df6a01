//! `modelpack-sample DIR [--shards N] [--size BYTES]`: writes a synthetic
//! Hugging Face-style model (real safetensors headers, config.json, tokenizer
//! files, README, LICENSE) for the demo, the benchmark and the tests.

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<f64>().ok().map(|n| (n * mult as f64) as u64)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut dir = None;
    let mut shards = 4usize;
    let mut size = 64u64 << 20;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--shards" => {
                i += 1;
                shards = args
                    .get(i)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| die("--shards needs a number"));
            }
            "--size" => {
                i += 1;
                size = args
                    .get(i)
                    .and_then(|s| parse_size(s))
                    .unwrap_or_else(|| die("--size needs a size like 64M or 4G"));
            }
            other if dir.is_none() && !other.starts_with('-') => {
                dir = Some(std::path::PathBuf::from(other))
            }
            other => die(&format!("unexpected argument {other:?}")),
        }
        i += 1;
    }
    let dir = dir.unwrap_or_else(|| {
        die("usage: modelpack-sample DIR [--shards N] [--size 64M] (total weight bytes)")
    });
    let shards = shards.max(1);
    if let Err(e) =
        modelpack_common::modelfile::write_sample_model(&dir, shards, size / shards as u64)
    {
        die(&e.to_string());
    }
}

fn die(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2)
}
