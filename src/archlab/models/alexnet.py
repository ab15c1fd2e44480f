"""AlexNet (Krizhevsky, Sutskever & Hinton, NeurIPS 2012).

Five convolutions and three fully connected layers, trained on two GPUs: the network that
won ImageNet 2012 by a wide margin and started the deep-learning era. Its ingredients are
still the vocabulary of the field: ReLU instead of tanh (six times faster to train),
overlapping max pooling, dropout in the large fully connected layers, data augmentation
(random crops, flips, PCA colour noise) and ten-view test-time augmentation.

The default form is the single-tower one that torchvision ships (64-192-384-256-256
channels, no local response normalisation). `towers=2` gives the paper's own form: 96-256-
384-384-256 channels, the filters of conv2, conv4 and conv5 split into two groups that only
see their own GPU's half of the channels, and local response normalisation after conv1 and
conv2.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from archlab.models.layers import FullyConnectedClassifier, get_act
from archlab.models.registry import Paper, register_model

ALEXNET = Paper(
    "ImageNet Classification with Deep Convolutional Neural Networks", 2012, None, "alexnet",
    "Depth, data and GPUs: five convolutions and three dense layers trained with ReLU, "
    "dropout and heavy augmentation on two GPUs; the ReLU alone trained six times faster "
    "than tanh.")

# (out channels, kernel, stride, padding, groups in the two-tower form) per convolution.
_SINGLE = ((64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))
_TWO_TOWER = ((96, 11, 4, 2), (256, 5, 1, 2), (384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1))
_TOWER_GROUPS = (1, 2, 1, 2, 2)  # conv3 is the one layer whose filters see both GPUs


class AlexNet(FullyConnectedClassifier):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 towers: int = 1, drop_rate: float = 0.5, fc_dim: int | None = None,
                 act: str | type[nn.Module] = "relu") -> None:
        super().__init__()
        if towers not in (1, 2):
            raise ValueError(f"towers must be 1 (torchvision's form) or 2 (the paper's), "
                             f"got {towers}")
        self.num_classes, self.in_chans = num_classes, in_chans
        convs = _TWO_TOWER if towers == 2 else _SINGLE
        if small_input:
            # 28-64 px images: a 3×3 stride-1 first convolution instead of 11×11 stride 4.
            convs = ((convs[0][0], 3, 1, 1),) + convs[1:]
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        chs = in_chans
        for i, (out, k, s, p) in enumerate(convs, start=1):
            groups = _TOWER_GROUPS[i - 1] if towers == 2 else 1
            layers[f"conv{i}"] = nn.Conv2d(chs, out, k, s, p, groups=groups)
            layers[f"relu{i}"] = get_act(act, inplace=True)
            if towers == 2 and i <= 2:
                # Local response normalisation: a neuron is damped by its neighbours in
                # adjacent channels, "lateral inhibition" (section 3.3; k=2, n=5, α=1e-4, β=0.75).
                layers[f"norm{i}"] = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
            if i in (1, 2, 5):
                # Overlapping pooling (3×3 windows, stride 2) cut top-1 error by 0.4%.
                layers[f"pool{i}"] = nn.MaxPool2d(3, 2)
            chs = out
        self.features = nn.Sequential(layers)
        self.num_features = chs
        pool = 2 if small_input else 6
        self.avgpool = nn.AdaptiveAvgPool2d(pool)
        fc_dim = fc_dim or (1024 if small_input else 4096)
        self.head_hidden_size = fc_dim
        self.classifier = nn.Sequential(OrderedDict([
            ("drop6", nn.Dropout(drop_rate)), ("fc6", nn.Linear(chs * pool * pool, fc_dim)),
            ("relu6", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(drop_rate)), ("fc7", nn.Linear(fc_dim, fc_dim)),
            ("relu7", nn.ReLU(inplace=True)),
            ("fc8", nn.Linear(fc_dim, num_classes)),
        ]))
        # The smallest image whose map survives conv1 and the three 3×3/2 poolings.
        self.min_input_size = 15 if small_input else 63
        self.feature_info = [
            dict(num_chs=convs[0][0], reduction=1 if small_input else 4, module="features.relu1"),
            dict(num_chs=convs[1][0], reduction=2 if small_input else 8, module="features.relu2"),
            dict(num_chs=chs, reduction=4 if small_input else 16, module="features.relu5"),
        ]

    checkpoint_key_maps = {
        "torchvision": [
            (r"^features\.0\.", "features.conv1."), (r"^features\.3\.", "features.conv2."),
            (r"^features\.6\.", "features.conv3."), (r"^features\.8\.", "features.conv4."),
            (r"^features\.10\.", "features.conv5."), (r"^classifier\.1\.", "classifier.fc6."),
            (r"^classifier\.4\.", "classifier.fc7."), (r"^classifier\.6\.", "classifier.fc8."),
        ],
    }


register_model("alexnet", AlexNet, paper=ALEXNET, params=61_100_840, params_source="tv",
               peers={"torchvision": "alexnet"})
register_model("alexnet_two_tower", AlexNet, paper=ALEXNET, towers=2,
               idea="The paper's own AlexNet: two towers, one per GPU, whose conv2, conv4 and "
                    "conv5 filters see only their own half of the channels, with local "
                    "response normalisation after conv1 and conv2.")
