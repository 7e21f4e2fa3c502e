//! c = α·a·b + β·c for f32 on AVX-512, the way BLIS does it: blocks of a and b are copied
//! ("packed") into panels laid out in the order a register-blocked micro-kernel reads them, and
//! the micro-kernel keeps a 12 × 32 (or 8 × 32) tile of c in registers while it runs down the
//! inner dimension. On the convolutions' products it ran at 70–77 GFLOP/s on one Cascade Lake
//! core, where matrixmultiply ran at 57–67 and PyTorch's MKL at 72–78 (docs/BENCHMARKS.md).
//!
//! Single-threaded: the kernels that call GEMM split their work over the pool themselves. Must
//! only be called on CPUs with AVX-512F; `gemm` checks.

use super::{store_scaled, Mat, ShiftedRows};
use crate::scratch::with_buffer;
use crate::simd::{transpose, Mask, Zmm, LANES};
use std::cell::RefCell;

/// Rows of c per micro-kernel tile, each one broadcast of a value of a: 12 rows keep 24 of the 32
/// registers busy; 8 rows fit channel counts such as 16, 32 and 64, where 12-row tiles would
/// compute up to a third more rows than c has. `gemm` picks the one that pads fewer rows, 12 on
/// a tie.
const TALL_MR: usize = 12;
const SHORT_MR: usize = 8;
/// Columns of c per tile: two AVX-512 registers.
const NR: usize = 2 * LANES;
/// The inner dimension per packed block: a 32 × KC panel of b (16 KiB) stays in L1 while the
/// panels of a stream past it.
const KC: usize = 128;
/// Tiles of rows of a per packed block (in L2).
const MC_TILES: usize = 16;
/// Columns of b per packed block.
const NC: usize = 32 * NR;

thread_local! {
    /// Each thread's packed panels of a and of b.
    static PANELS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// b as the product reads it: its columns, and panels of NR of them.
pub(super) trait RightOperand {
    fn cols(&self) -> usize;

    /// Packs b[rows, cols] as `pack` packs its transpose: panels of NR columns of b, each laid
    /// out row after row of b, columns past the last zero.
    fn pack_panels(&self, cols: (usize, usize), rows: (usize, usize), out: &mut [f32]);

    /// b's rows where they already lie, when each is contiguous: the micro-kernel then reads
    /// them in place and b is never packed.
    fn rows_in_place(&self) -> Option<&ShiftedRows<'_>> {
        None
    }
}

impl RightOperand for Mat<'_, f32> {
    fn cols(&self) -> usize {
        self.cols
    }

    fn pack_panels(&self, cols: (usize, usize), rows: (usize, usize), out: &mut [f32]) {
        pack::<NR>(&self.t(), cols, rows, out);
    }
}

impl RightOperand for ShiftedRows<'_> {
    fn cols(&self) -> usize {
        self.cols
    }

    fn pack_panels(
        &self,
        (col, cols): (usize, usize),
        (row, rows): (usize, usize),
        out: &mut [f32],
    ) {
        // A panel's row of NR values is one piece of a shifted row.
        pack_columns::<NR>(cols, rows, out, |first, j, height| {
            &self.row(row + j)[col + first..][..height]
        });
    }

    fn rows_in_place(&self) -> Option<&ShiftedRows<'_>> {
        Some(self)
    }
}

/// b = sᵀ for shifted rows s.
pub(super) struct Transposed<'a>(pub ShiftedRows<'a>);

impl RightOperand for Transposed<'_> {
    fn cols(&self) -> usize {
        self.0.rows()
    }

    fn pack_panels(
        &self,
        (col, cols): (usize, usize),
        (row, rows): (usize, usize),
        out: &mut [f32],
    ) {
        // SAFETY: this module only runs on AVX-512F (`gemm`'s contract).
        unsafe { pack_rows::<NR>(cols, rows, out, |i| &self.0.row(col + i)[row..][..rows]) };
    }
}

/// c = α·a·b + β·c with c contiguous row-major (a.rows × b.cols) and any strides for a. β = 0
/// never reads c.
///
/// # Safety
/// The CPU must have AVX-512F.
pub(super) unsafe fn gemm(
    alpha: f32,
    a: Mat<f32>,
    b: &impl RightOperand,
    beta: f32,
    c: &mut [f32],
) {
    if a.rows.next_multiple_of(SHORT_MR) < a.rows.next_multiple_of(TALL_MR) {
        // SAFETY: the caller guarantees AVX-512F, `tiled`'s only requirement.
        unsafe { tiled::<SHORT_MR>(alpha, a, b, beta, c) }
    } else {
        // SAFETY: as in the branch above.
        unsafe { tiled::<TALL_MR>(alpha, a, b, beta, c) }
    }
}

/// `gemm` with tiles of MR rows.
///
/// # Safety
/// The CPU must have AVX-512F.
unsafe fn tiled<const MR: usize>(
    alpha: f32,
    a: Mat<f32>,
    b: &impl RightOperand,
    beta: f32,
    c: &mut [f32],
) {
    let (m, k, n) = (a.rows, a.cols, b.cols());
    let c = &mut c[..m * n];
    let mc_max = MC_TILES * MR;
    let a_len = mc_max * KC;
    let in_place = b.rows_in_place();
    let b_len = match in_place {
        Some(_) => 0,
        None => NC.min(n.next_multiple_of(NR)) * KC,
    };
    with_buffer(&PANELS, a_len + b_len, |panels| {
        let (pa, pb) = panels.split_at_mut(a_len);
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                if in_place.is_none() {
                    b.pack_panels((jc, nc), (pc, kc), pb);
                }
                // The first block of the inner dimension applies β; the others add to it.
                let beta = if pc == 0 { beta } else { 1.0 };
                for ic in (0..m).step_by(mc_max) {
                    let mc = mc_max.min(m - ic);
                    pack::<MR>(&a, (ic, mc), (pc, kc), pa);
                    for jr in (0..nc).step_by(NR) {
                        let cols = NR.min(nc - jr);
                        for ir in (0..mc).step_by(MR) {
                            let a_panel = &pa[ir * kc..][..MR * kc];
                            let tile = Tile {
                                row: ic + ir,
                                col: jc + jr,
                                rows: MR.min(mc - ir),
                                cols,
                                ldc: n,
                            };
                            match in_place {
                                Some(rows) => {
                                    let b = RowsInPlace::new(rows, pc, kc, jc + jr, cols);
                                    // SAFETY: the caller guarantees the CPU has AVX-512F; the
                                    // panel and tile are sized for kc steps (see `micro_kernel`).
                                    unsafe {
                                        micro_kernel::<MR>(kc, a_panel, b, alpha, beta, c, tile)
                                    }
                                }
                                None => {
                                    let b = PackedPanel::new(&pb[jr * kc..], kc);
                                    // SAFETY: as in the branch above.
                                    unsafe {
                                        micro_kernel::<MR>(kc, a_panel, b, alpha, beta, c, tile)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    });
}

/// Where a micro-kernel's tile sits in c (of `ldc` columns), and how much of it is inside c.
#[derive(Clone, Copy)]
struct Tile {
    row: usize,
    col: usize,
    rows: usize,
    cols: usize,
    ldc: usize,
}

/// Copies m[row.., col..] (rows × cols) into panels of W rows, each laid out column after column
/// (W values per column), rows past the last zero. a packs into panels of MR rows; b packs as
/// bᵀ into panels of NR, which lays each panel out row after row of b.
fn pack<const W: usize>(
    m: &Mat<f32>,
    (row, rows): (usize, usize),
    (col, cols): (usize, usize),
    out: &mut [f32],
) {
    let (rs, cs) = (m.row_stride as usize, m.col_stride as usize);
    let at = |i: usize, j: usize| (row + i) * rs + (col + j) * cs;
    if cs == 1 {
        // SAFETY: this module only runs on AVX-512F (`gemm`'s contract).
        unsafe { pack_rows::<W>(rows, cols, out, |i| &m.data[at(i, 0)..][..cols]) };
    } else if rs == 1 {
        pack_columns::<W>(rows, cols, out, |first, j, height| {
            &m.data[at(first, j)..][..height]
        });
    } else {
        for_each_panel::<W>(rows, cols, out, |first, height, panel| {
            for (j, column) in panel.chunks_exact_mut(W).enumerate() {
                for (i, v) in column.iter_mut().enumerate().take(height) {
                    *v = m.data[at(first + i, j)];
                }
            }
        });
    }
}

/// `pack` for a matrix whose rows run contiguously: `row(i)` is row i's `cols` values, each
/// read once, in order. A transpose: blocks of 16 rows × 16 columns go through registers.
#[target_feature(enable = "avx512f")]
fn pack_rows<'m, const W: usize>(
    rows: usize,
    cols: usize,
    out: &mut [f32],
    row: impl Fn(usize) -> &'m [f32],
) {
    for_each_panel::<W>(rows, cols, out, |first, height, panel| {
        for i0 in (0..height).step_by(LANES) {
            let block_rows = LANES.min(height - i0);
            let mut sources: [&[f32]; LANES] = [&[]; LANES];
            for (i, source) in sources.iter_mut().enumerate().take(block_rows) {
                *source = &row(first + i0 + i)[..cols];
            }
            // A column's rows i0.. of the panel: 16 of them, or the rest of a narrower panel.
            let store = Mask::first(LANES.min(W - i0));
            for j0 in (0..cols).step_by(LANES) {
                let width = LANES.min(cols - j0);
                let load = Mask::first(width);
                let mut block = [Zmm::zero(); LANES];
                for (v, source) in block.iter_mut().zip(&sources[..block_rows]) {
                    // SAFETY: the mask reads only the row's `width` values from j0.
                    *v = unsafe { Zmm::load_masked(load, source[j0..].as_ptr()) };
                }
                transpose(&mut block);
                for (j, column) in block.iter().enumerate().take(width) {
                    let dst = &mut panel[(j0 + j) * W + i0..];
                    // SAFETY: the mask writes W − i0 values at most, inside column j0 + j.
                    unsafe { column.store_masked(store, dst.as_mut_ptr()) };
                }
            }
        }
    });
}

/// `pack` for a matrix whose columns run contiguously: `column(first, j, height)` is the
/// `height` values of column j from row `first` on, each panel column one copy.
fn pack_columns<'m, const W: usize>(
    rows: usize,
    cols: usize,
    out: &mut [f32],
    column: impl Fn(usize, usize, usize) -> &'m [f32],
) {
    for_each_panel::<W>(rows, cols, out, |first, height, panel| {
        for (j, values) in panel.chunks_exact_mut(W).enumerate() {
            values[..height].copy_from_slice(column(first, j, height));
        }
    });
}

/// Calls `fill(first row, rows in the panel, panel)` for each panel of W rows of a rows × cols
/// block, after zeroing a last panel that is not full.
fn for_each_panel<const W: usize>(
    rows: usize,
    cols: usize,
    out: &mut [f32],
    mut fill: impl FnMut(usize, usize, &mut [f32]),
) {
    for (p, panel) in out
        .chunks_exact_mut(W * cols)
        .take(rows.div_ceil(W))
        .enumerate()
    {
        let height = W.min(rows - p * W);
        if height < W {
            panel.fill(0.0);
        }
        fill(p * W, height, panel);
    }
}

/// kc rows of NR values of b, as the micro-kernel reads them.
trait PanelRows {
    /// Row `k`'s NR values (values past b's last column are arbitrary).
    ///
    /// # Safety
    /// The CPU must have AVX-512F, and k < the kc the rows were made for.
    unsafe fn row(&self, k: usize) -> [Zmm; 2];
}

/// A packed panel of b: kc rows of NR values, one after another.
#[derive(Clone, Copy)]
struct PackedPanel<'a>(&'a [f32]);

impl<'a> PackedPanel<'a> {
    fn new(panel: &'a [f32], kc: usize) -> Self {
        PackedPanel(&panel[..NR * kc])
    }
}

impl PanelRows for PackedPanel<'_> {
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn row(&self, k: usize) -> [Zmm; 2] {
        // SAFETY: `new` sized the panel for kc rows, and the caller keeps k below kc.
        unsafe {
            let p = self.0.as_ptr().add(k * NR);
            [Zmm::load(p), Zmm::load(p.add(LANES))]
        }
    }
}

/// Rows pc.. of shifted rows, from column `col`, read where they lie: the `cols` (≤ NR) values
/// inside b by masked loads.
#[derive(Clone, Copy)]
struct RowsInPlace<'a> {
    data: &'a [f32],
    starts: &'a [usize],
    col: usize,
    masks: [Mask; 2],
}

impl<'a> RowsInPlace<'a> {
    fn new(rows: &'a ShiftedRows<'a>, pc: usize, kc: usize, col: usize, cols: usize) -> Self {
        // Every row holds `rows.cols` values inside `data` (`ShiftedRows::new` checks).
        assert!(col + cols <= rows.cols && cols <= NR);
        RowsInPlace {
            data: rows.data,
            starts: &rows.starts[pc..][..kc],
            col,
            masks: [
                Mask::first(cols.min(LANES)),
                Mask::first(cols.saturating_sub(LANES)),
            ],
        }
    }
}

impl PanelRows for RowsInPlace<'_> {
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn row(&self, k: usize) -> [Zmm; 2] {
        // SAFETY: row k's values col..col + cols lie inside `data` (see `new`); the masks read
        // those only.
        unsafe {
            let p = self
                .data
                .as_ptr()
                .add(*self.starts.get_unchecked(k) + self.col);
            [
                Zmm::load_masked(self.masks[0], p),
                Zmm::load_masked(self.masks[1], p.add(LANES)),
            ]
        }
    }
}

/// c[tile] = α · (a_panel · b) + β · c[tile] for c of b.cols() columns, the product over kc in
/// 2·MR registers.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f")]
fn micro_kernel<const MR: usize>(
    kc: usize,
    a_panel: &[f32],
    b: impl PanelRows,
    alpha: f32,
    beta: f32,
    c: &mut [f32],
    tile: Tile,
) {
    assert!(a_panel.len() >= MR * kc);
    let mut acc = [[Zmm::zero(); 2]; MR];
    let mut pa = a_panel.as_ptr();
    for k in 0..kc {
        // SAFETY: the assert above keeps kc steps of MR values of a in the panel; b was made
        // for kc rows.
        unsafe {
            let [b0, b1] = b.row(k);
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = Zmm::splat(*pa.add(i));
                row[0] = ai.mul_add(b0, row[0]);
                row[1] = ai.mul_add(b1, row[1]);
            }
            pa = pa.add(MR);
        }
    }
    let ldc = tile.ldc;
    for (i, row) in acc.iter().enumerate().take(tile.rows) {
        let out = &mut c[(tile.row + i) * ldc + tile.col..][..tile.cols];
        for (half, v) in out.chunks_mut(LANES).zip(row) {
            store_scaled(half, *v, alpha, beta);
        }
    }
}
