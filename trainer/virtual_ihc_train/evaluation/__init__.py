"""What ``virtual-ihc-train evaluate`` and the loop's validation measure: PSNR/SSIM (``metrics``), FID/KID
features (``inception``), LPIPS/DISTS (``perceptual``), MIST's metrics (``mist_metrics``), TDKstain's
task-specific errors (``tdkstain_errors``), and the command itself (``evaluate``)."""
