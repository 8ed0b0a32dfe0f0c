"""The DAP network: DINOv3-style ViT backbone, adapter, DPT depth and range-mask heads.

`from dap_core.model import DAP, DAPConfig, DAPOutput`. Official checkpoint import lives in
`dap_core.model.official`, preprocessing in `dap_core.model.preprocess`.
"""

from dap_core.model.config import DAPConfig
from dap_core.model.dap import DAP, DAPOutput, mask_head_name

__all__ = ["DAP", "DAPConfig", "DAPOutput", "mask_head_name"]
