"""Classical cross-modal hashing baselines (numpy/scipy), with scikit-learn's estimator contract.

    from adah.baselines import CCAITQ, SCMSeq, CMFH, SePH

    model = SCMSeq(bits=32).fit(image_x, text_x, labels)
    image_codes = model.encode(image_x_query, "image")   # (n, 32) int8 in {-1, +1}
    text_codes = model.encode(text_x_db, "text")

* ``CCAITQ``: Gong et al., TPAMI 2013 (CCA + iterative quantization); unsupervised.
* ``SCMSeq``: Zhang & Li, AAAI 2014 (semantic correlation maximization, sequential); supervised.
* ``CMFH``: Ding et al., CVPR 2014 (collective matrix factorization hashing); unsupervised.
* ``SePH``: Lin et al., CVPR 2015 (semantics-preserving hashing, k-means landmarks); supervised.

Each class docstring states the simplifications made against the paper.
"""

from adah.baselines.base import CrossModalHashing, NotFittedError, sign_codes
from adah.baselines.cca_itq import CCAITQ
from adah.baselines.cmfh import CMFH
from adah.baselines.scm import SCMSeq
from adah.baselines.seph import SePH

BASELINES = {"cca_itq": CCAITQ, "scm_seq": SCMSeq, "cmfh": CMFH, "seph": SePH}

__all__ = ["BASELINES", "CCAITQ", "CMFH", "CrossModalHashing", "NotFittedError", "SCMSeq", "SePH", "sign_codes"]
