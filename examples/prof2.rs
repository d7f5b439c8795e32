use dataleaf::model::sparse::{self, ConvShape};
fn main() {
    let s = ConvShape {
        cin: 32,
        cout: 64,
        k: 3,
        stride: 1,
        pad: 0,
        hin: 26,
        win: 26,
        hout: 24,
        wout: 24,
    };
    let rows = 10;
    let w: Vec<f32> = (0..64 * 288)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    let out_len = 64 * 576;
    // one nonzero per 2x2 window per channel, 80% active
    let mut g = vec![0.0f32; rows * out_len];
    for r in 0..rows {
        for co in 0..64 {
            for ph in 0..12 {
                for pw in 0..12 {
                    let h = (co * 31 + ph * 7 + pw * 13) % 20;
                    if h < 4 {
                        continue;
                    }
                    let (di, dj) = (h % 2, (h / 2) % 2);
                    g[r * out_len + co * 576 + (2 * ph + di) * 24 + 2 * pw + dj] = (r + 1) as f32 * 0.1;
                }
            }
        }
    }
    println!("density {}", sparse::density(&g[..out_len]));
    for _ in 0..20 {
        std::hint::black_box(sparse::conv_input_grad(&s, &w, &g, rows));
    }
    let t = std::time::Instant::now();
    for _ in 0..200 {
        std::hint::black_box(sparse::conv_input_grad(&s, &w, &g, rows));
    }
    println!("sparse conv {:.3} ms", t.elapsed().as_secs_f64() * 1e3 / 200.0);
    let g2 = vec![0.5f32; 10 * 128];
    let w2 = vec![0.1f32; 128 * 9216];
    for _ in 0..20 {
        std::hint::black_box(sparse::linear_input_grad(&w2, 128, 9216, &g2, 10));
    }
    let t = std::time::Instant::now();
    for _ in 0..200 {
        std::hint::black_box(sparse::linear_input_grad(&w2, 128, 9216, &g2, 10));
    }
    println!(
        "linear dense-active {:.3} ms",
        t.elapsed().as_secs_f64() * 1e3 / 200.0
    );
}
