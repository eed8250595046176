"""Makes the PDF fixtures of tests/documents.rs (run once; the files are committed)."""
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas
from pypdf import PdfReader, PdfWriter

PAGES = [
    ["Chapter one: the harbour.", "The lighthouse keeper counts forty ships every morning.",
     "Fog rolls in from the west before noon."],
    ["Chapter two: the market.", "The fishmonger sells mackerel at seven coins a pound.",
     "Children chase gulls between the stalls."],
    ["Chapter three: the storm.", "A violet lightning bolt split the old oak on the hill.",
     "By midnight the harbour was calm again."],
]

def three_pages(path):
    c = canvas.Canvas(path, pagesize=A4)
    for lines in PAGES:
        y = 780
        for line in lines:
            c.drawString(72, y, line)
            y -= 20
        c.showPage()
    c.save()

three_pages("three-pages.pdf")

c = canvas.Canvas("image-only.pdf", pagesize=A4)
c.rect(100, 100, 300, 300, fill=1)
c.showPage()
c.save()

w = PdfWriter(clone_from=PdfReader("three-pages.pdf"))
w.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
with open("encrypted.pdf", "wb") as f:
    w.write(f)

data = open("three-pages.pdf", "rb").read()
open("corrupt.pdf", "wb").write(data[: len(data) // 3])
