/*
 * tiling.c — the VAE tiling decision: from the vae compute reserve and the
 * output size, whether to decode in tiles and how large (latent = size / 8,
 * overlap 0.5, time never tiled).
 */
#include "plan/plan.h"

#include "core/error.h"

#include <math.h>
#include <string.h>

#define TLP_VAE_BYTES_PER_VOXEL (256ull * 1024ull)

static uint32_t tiles_along(uint32_t side, uint32_t tile) {
    if (tile >= side) return 1;
    uint32_t stride = tile / 2 ? tile / 2 : 1;
    return (side - tile + stride - 1) / stride + 1;
}

tl_status tl_plan_vae_tiling(const tl_plan_size *size, uint64_t vae_reserve,
                             uint64_t bytes_per_voxel, tl_vae_tiling *out) {
    if (!size || !out) return tl__err(TL_ERR_INVALID_ARG, "vae tiling: NULL argument");
    memset(out, 0, sizeof *out);
    if (size->width == 0 || size->height == 0 || size->frames == 0)
        return tl__err(TL_ERR_INVALID_ARG, "vae tiling: size %ux%ux%u has a zero dimension",
                      size->width, size->height, size->frames);
    if (bytes_per_voxel == 0) bytes_per_voxel = TLP_VAE_BYTES_PER_VOXEL;
    out->decided = true;
    out->latent_w = (size->width + 7) / 8;
    out->latent_h = (size->height + 7) / 8;
    out->frames = size->frames;
    out->tiles = 1;
    uint64_t budget_voxels = vae_reserve / bytes_per_voxel;
    uint64_t need = (uint64_t)out->latent_w * out->latent_h * out->frames;
    if (need <= budget_voxels) return TL_OK;
    uint32_t side = out->latent_w > out->latent_h ? out->latent_w : out->latent_h;
    double t = round(sqrt((double)budget_voxels / (double)out->frames));
    uint32_t tile = t < 8 ? 8 : (t > side ? side : (uint32_t)t);
    if (tile >= out->latent_w && tile >= out->latent_h) return TL_OK;
    out->tiled = true;
    out->tile = tile;
    out->overlap = 0.5;
    out->tiles = tiles_along(out->latent_w, tile) * tiles_along(out->latent_h, tile);
    return TL_OK;
}
